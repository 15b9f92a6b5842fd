-- The compose stack's PostgreSQL holds two databases: `dagster` (POSTGRES_DB: the Dagster
-- instance's runs, events and schedules) and `mail_pipeline` (the app's own tables).
CREATE DATABASE mail_pipeline;

"""Business rules in plain Python: no Dagster, no SQLAlchemy, no HTTP."""

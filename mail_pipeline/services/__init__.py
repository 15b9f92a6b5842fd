"""Use cases: each takes repositories/sessions and clients as arguments; no Dagster."""

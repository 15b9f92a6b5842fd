"""Persistence: SQLAlchemy models, gateways that own SQL and transactions, Alembic migrations."""

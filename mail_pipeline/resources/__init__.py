"""Thin Dagster resources that build the project's database and integration objects."""

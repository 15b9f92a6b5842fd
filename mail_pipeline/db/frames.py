"""Reading a large query's rows into a pandas frame on PostgreSQL.

Fetching a million rows as driver tuples and building a frame from them takes seconds (a
Python object per value). ``COPY (query) TO STDOUT`` streams the same rows as CSV, which
Arrow's CSV reader parses in a fraction of that: attribution and the daily metrics read their
large inputs this way. Types are what the CSV says: integers as ``int64`` (``float64`` when
a column has NULLs), text as strings, dates as ``datetime.date``; a boolean arrives as
PostgreSQL's ``t``/``f`` text, so callers convert it (or select it as an integer).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
from pyarrow import csv
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.selectable import CompoundSelect

#: The types ``copy_frame`` can be told a column has.
ARROW_TYPES = {"int64": pa.int64(), "str": pa.string()}


def copy_frame(
    session: Session,
    statement: Select[Any] | CompoundSelect,
    *,
    names: Sequence[str] | None = None,
    dtype: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The rows of ``statement`` (run in ``session``'s transaction on PostgreSQL), columns
    named ``names`` or as the statement names them; ``dtype`` fixes a column's type (a key of
    ``ARROW_TYPES``) instead of Arrow's inference, e.g. ``"str"`` for codes that look like
    numbers. Driver errors are raised as SQLAlchemy raises them everywhere else."""
    compiled = statement.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True}
    )
    names = list(names or statement.selected_columns.keys())
    sql = f"COPY ({compiled}) TO STDOUT (FORMAT csv)"
    buffer = io.BytesIO()
    raw: Any = session.connection().connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(sql, compiled.params) as copy:
            for chunk in copy:
                buffer.write(chunk)
    except psycopg.Error as error:
        raise DBAPIError.instance(sql, None, error, psycopg.Error, True) from error
    if not buffer.tell():
        return pd.DataFrame({name: pd.Series(dtype=object) for name in names})
    buffer.seek(0)
    types = {name: ARROW_TYPES[kind] for name, kind in (dtype or {}).items()}
    table = csv.read_csv(
        buffer,
        read_options=csv.ReadOptions(column_names=names),
        convert_options=csv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True
        ),
    )
    return table.to_pandas()

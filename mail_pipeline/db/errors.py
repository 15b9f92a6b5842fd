"""Telling a database failure that is one statement's fault from the database being away.

A consumer that applies messages one by one (each in its own savepoint) must decide, when a
message fails, whether to blame the message (roll its savepoint back, dead-letter it, go on)
or the database (stop: every message comes back later):

- :func:`is_outage`: the connection or the server failed - ``OperationalError`` (connection
  lost, server shutting down, lock or statement timeout, deadlock, serialization failure),
  ``InterfaceError``, or any driver error that invalidated the connection. Not a message's
  fault; retrying later is the cure.
- anything else (``DataError``, ``IntegrityError``, ``ProgrammingError``, a value a column
  type refuses, ...) is the statement's, so the message's that produced it.

:func:`describe` gives the readable one-line form: the exception type and the first line of
the driver's message. The SQL text and bound values are left out (they may quote a row), as
is PostgreSQL's ``DETAIL`` line.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

#: Characters of a description kept (it travels in a dead-letter attribute).
MAX_DESCRIPTION = 300


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the database (not the statement) failed."""
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return isinstance(error, sa_exc.DBAPIError) and bool(error.connection_invalidated)


def describe(error: BaseException) -> str:
    """``"DataError: value too long for type character varying(200)"``: the type, and the
    first line of the message of the driver's exception when SQLAlchemy wrapped one, cut to
    :data:`MAX_DESCRIPTION` characters and escaped to ASCII."""
    source: BaseException = error
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        source = error.orig
    lines = str(source).strip().splitlines()
    message = lines[0].strip() if lines else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 3] + "..."
    return text.encode("unicode_escape").decode("ascii")

"""The SQLite file behind :class:`~mail_pipeline.integrations.queues.local.LocalQueue`.

Under ``dagster dev`` the sensors, runs and the webserver are separate processes that share
one queue file, so it runs in WAL mode with a busy timeout, and every change happens in an
immediate (write-locked) transaction: two receivers can never take the same message. Within a
process, threads share one connection behind a lock. ``":memory:"`` gives a private database
for tests (every queue that must see the same messages has to share the same
:class:`QueueDatabase` object, which :meth:`LocalQueue.dlq` does).

Tables (several queues share them, told apart by ``queue``):

- ``queue_messages``: one row per message, in send order (``seq``); ``visible_at`` is when it
  may next be received, ``receipt_handle`` the handle of its latest receive, and the
  ``dead_letter_*`` columns say why and from where a message reached a dead-letter queue.
- ``queue_deleted_receipts``: handles deleted in the last few minutes, so that deleting again
  with the same handle succeeds, as it does on SQS.
"""

from __future__ import annotations

from pathlib import Path

from mail_pipeline.integrations.sqlite_file import SharedSqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt_handle TEXT UNIQUE,
    dead_letter_reason TEXT,
    dead_letter_source TEXT,
    dead_letter_original_id TEXT,
    dead_lettered_at REAL
);
CREATE INDEX IF NOT EXISTS queue_messages_order ON queue_messages (queue, seq);
CREATE TABLE IF NOT EXISTS queue_deleted_receipts (
    receipt_handle TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    deleted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_deleted_receipts_age ON queue_deleted_receipts (deleted_at);
"""


class QueueDatabase(SharedSqlite):
    """One SQLite file (or private in-memory database) holding any number of local queues.

    Opening is lazy: constructing does no I/O; the first query creates the file and tables.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        super().__init__(path, _SCHEMA, rows_as_mappings=True)

"""Where the sandbox order sources keep their orders: one table per vendor in the sandbox file.

A vendor reports an order as it stands *now*: a Shopify order refunded yesterday shows its
refund and yesterday's ``updatedAt``; an order placed tomorrow does not exist yet. So each
order is kept as *versions*, one row per change, ``effective_at`` being the time of the
change (Klaviyo: the event's ``datetime``; Ometria: ``timestamp_update``; Shopify:
``updatedAt``). A sandbox serves, for each order, its latest version whose time has come,
and filters and sorts by that version's time - exactly the field each vendor sorts by. The
shopper can therefore write an order's whole future at once (placed, then refunded a week
later) and the sandbox reveals it as the clock passes.

The rows live in the shared :class:`~mail_pipeline.integrations.sandbox.store.SandboxStore`
file (its connection and lock), so every Dagster process sees one vendor. ``tag`` carries what
a vendor filters on besides time (Klaviyo: the event's metric id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mail_pipeline.integrations.sandbox.store import SandboxStore

TABLES = {
    "klaviyo": "sandbox_klaviyo_events",
    "ometria": "sandbox_ometria_orders",
    "shopify": "sandbox_shopify_orders",
}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {table} ("
    " account TEXT NOT NULL, key TEXT NOT NULL, effective_at REAL NOT NULL,"
    " tag TEXT, doc TEXT NOT NULL, PRIMARY KEY (account, key, effective_at))",
    "CREATE INDEX IF NOT EXISTS {table}_time ON {table} (account, effective_at, key)",
)


@dataclass(frozen=True)
class Version:
    effective_at: float
    key: str
    doc: Any


class OrderBook:
    """One vendor's orders in the sandbox store, by account (an API key's data, a shop)."""

    def __init__(self, store: SandboxStore, vendor: str) -> None:
        self.store = store
        self.table = TABLES[vendor]
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            with self.store.transaction() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement.format(table=self.table))
            self._ready = True

    def put(
        self, account: str, key: str, effective_at: float, doc: Any, *, tag: str | None = None
    ) -> bool:
        """Record a version of order ``key`` (served from ``effective_at`` on); a version
        already recorded at that time is kept as it was. True if it was new."""
        self._ensure()
        with self.store.transaction() as conn:
            cursor = conn.execute(
                f"INSERT OR IGNORE INTO {self.table} (account, key, effective_at, tag, doc) "
                "VALUES (?, ?, ?, ?, ?)",
                (account, key, effective_at, tag, json.dumps(doc)),
            )
            return cursor.rowcount > 0

    def page(
        self,
        account: str,
        *,
        now: float,
        since: float | None = None,
        until: float | None = None,
        after: tuple[float, str] | None = None,
        tag: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Version]:
        """The current versions (latest with ``effective_at <= now``) in
        ``[since, until)`` after the keyset ``after``, by ``(effective_at, key)``."""
        self._ensure()
        where = ["v.account = ?", "v.effective_at <= ?"]
        args: list[Any] = [account, now]
        if since is not None:
            where.append("v.effective_at >= ?")
            args.append(since)
        if until is not None:
            where.append("v.effective_at < ?")
            args.append(until)
        if tag is not None:
            where.append("v.tag = ?")
            args.append(tag)
        if after is not None:
            where.append("(v.effective_at > ? OR (v.effective_at = ? AND v.key > ?))")
            args.extend([after[0], after[0], after[1]])
        where.append(
            f"NOT EXISTS (SELECT 1 FROM {self.table} w WHERE w.account = v.account "
            "AND w.key = v.key AND w.effective_at > v.effective_at AND w.effective_at <= ?)"
        )
        args.append(now)
        sql = (
            f"SELECT v.effective_at, v.key, v.doc FROM {self.table} v WHERE "
            + " AND ".join(where)
            + " ORDER BY v.effective_at, v.key LIMIT ? OFFSET ?"
        )
        with self.store.reading() as conn:
            rows = conn.execute(sql, [*args, limit, offset]).fetchall()
        return [Version(at, key, json.loads(doc)) for at, key, doc in rows]

    def current(self, account: str, key: str, now: float) -> Any | None:
        """The version of order ``key`` served at ``now`` (None: not placed yet)."""
        self._ensure()
        with self.store.reading() as conn:
            row = conn.execute(
                f"SELECT doc FROM {self.table} WHERE account = ? AND key = ? "
                "AND effective_at <= ? ORDER BY effective_at DESC LIMIT 1",
                (account, key, now),
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def keys(self, account: str) -> list[str]:
        """Every order of the account, served yet or not, in key order."""
        self._ensure()
        with self.store.reading() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT key FROM {self.table} WHERE account = ? ORDER BY key",
                (account,),
            ).fetchall()
        return [key for (key,) in rows]

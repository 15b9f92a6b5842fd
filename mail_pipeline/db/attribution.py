"""Attribution in SQL: which orders to examine, their candidates as frames, the bulk writes
of what was decided, and each organization's watermark.

**Which orders a run examines** (:meth:`AttributionGateway.pending_by_organization`,
:meth:`AttributionGateway.load`), per organization and its ``attribution_state`` row
(:class:`~mail_pipeline.db.models.AttributionState`), among the orders dated at or before
the run's ``now`` (those dated after it wait for a later run):

- every order, when the organization has no state yet (its first run);
- orders changed since the watermark: ``updated_at > examined_through`` (new orders, a
  refund, a cancellation, new codes or keys: the order upsert stamps ``updated_at`` only
  when such a field changes), read through the index on (organization_id, updated_at);
- orders that waited: dated after the last run's ``now`` (``ordered_at > ordered_through``),
  whatever their ``updated_at`` - so a future-dated order never holds the watermark back;
- orders credited to a recipient who is no longer mailed or whose window no longer holds the
  order (the printer failed the piece after accepting it, or it was mailed again).

Examining an order is final until the order changes: the window starts at the mail date, so
a recipient mailed after the examination can never claim an order placed before it, and the
candidates an order had when it was examined are the ones it will ever have (a failed piece
aside, examined again as above). Holdout matches are revised when the order changes, not
when the campaign's later mailings change. Attribution never writes an order.

**The watermark** (:meth:`AttributionGateway.advance`, in the transaction that writes the
organization's credits): ``examined_through`` is set to what
``services.attribution.next_watermark`` computed before the run read anything - the run's
start, or the start of the oldest transaction that was writing at that moment if earlier
(PostgreSQL, :meth:`AttributionGateway.oldest_write_in_flight`), minus a lag - and
``ordered_through`` to the run's ``now``. It rests on the writers' contract: **an order's
``updated_at`` is stamped at most the lag before that transaction's first write**, by a clock
within the lag of the attribution run's (the order upsert stamps its clock as a page's short
transaction begins). Then every change stamped at or before the watermark was committed
before the run read, or belongs to a transaction the run saw writing (whose start lowered
the watermark), so no committed change is ever skipped; the changes of the last minutes are
examined again by the next run, which writes nothing when the decision is what is stored.
A run that fails rolls back its credits and its watermark together.

**Writes** are bulk: the examined orders and the decided rows are staged in temporary
tables (``COPY`` on PostgreSQL, one ``executemany`` on SQLite), then one statement each
removes credits no longer decided, updates revenue and currency of kept credits and inserts
new ones. A credit whose recipient, campaign or method changed is replaced (a new
``attributed_at``); a revenue change (a refund) is updated in place (``attributed_at``
kept).

**Candidates** (:meth:`AttributionGateway.load`): a run of at most
:data:`KEY_FILTER_MAX_ORDERS` orders (a 5-minute tick) reads only the mailed and holdout
recipients sharing an email key, an address key or an offer code with one of its orders
(the keys staged in a temporary table), plus the mailings of those holdouts' campaigns for
their mail dates; a larger run (a first run over a history) reads every mailed and holdout
recipient of its organizations. Both give the same decisions (the matching applies the
rules either way); a tick's cost follows its orders, not the number of recipients.

Frames are read with ``COPY ... TO STDOUT`` on PostgreSQL (a million rows in about a second)
and through the session on SQLite; times travel as microseconds since the epoch, exactly
(SQLite's date functions would round them to milliseconds). Runs are serialized: on
PostgreSQL a transaction-scoped advisory lock (:meth:`AttributionGateway.lock`), on SQLite
the write lock every transaction takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.frames import copy_frame
from mail_pipeline.db.models import (
    Attribution,
    AttributionState,
    Campaign,
    HoldoutMatch,
    Order,
    Organization,
    Recipient,
)
from mail_pipeline.db.types import UTCDateTime
from mail_pipeline.domain.attribution import MAILED_STATUSES
from mail_pipeline.domain.recipients import RecipientStatus

#: The upper half of the PostgreSQL advisory lock keys that serialize attribution of each
#: organization (the lower half is the organization's id).
LOCK_KEY = 0x4D50_4154  # "MPAT"

#: How a frame's column travels: ``json`` is left as read (JSON text, or the value).
Kind = Literal["int", "str", "bool", "time", "json"]

ORDER_COLUMNS: dict[str, Kind] = {
    "order_id": "int",
    "organization_id": "int",
    "email_key": "str",
    "address_key": "str",
    "total_minor": "int",
    "refunded_minor": "int",
    "currency": "str",
    "ordered_at": "time",
    "cancelled": "bool",
}
CODE_COLUMNS: dict[str, Kind] = {"order_id": "int", "code": "str"}
MAILING_COLUMNS: dict[str, Kind] = {"campaign_id": "int", "mailed_at": "time"}
MAILED_COLUMNS: dict[str, Kind] = {
    "recipient_id": "int",
    "organization_id": "int",
    "campaign_id": "int",
    "email_key": "str",
    "address_key": "str",
    "offer_code": "str",
    "mailed_at": "time",
    "window_days": "int",
}
HOLDOUT_COLUMNS: dict[str, Kind] = {
    **{k: v for k, v in MAILED_COLUMNS.items() if k != "mailed_at"},
    "joined_at": "time",
}
#: The columns of a decided credit (an attribution or a holdout match).
CREDIT_COLUMNS = (
    "order_id",
    "recipient_id",
    "campaign_id",
    "organization_id",
    "match_type",
    "revenue_minor",
    "currency",
)

_MAILED = sorted(status.value for status in MAILED_STATUSES)

#: A run examining at most this many orders (a 5-minute tick) reads only the recipients that
#: share a key with them; a larger one reads every mailed and holdout recipient of the
#: organizations, which is cheaper than looking that many keys up.
KEY_FILTER_MAX_ORDERS = 20_000

_staging = sa.MetaData()
_examined = sa.Table(
    "attribution_examined",
    _staging,
    sa.Column("order_id", sa.BigInteger, primary_key=True, autoincrement=False),
    prefixes=["TEMPORARY"],
)
#: Below every stored time: the watermark of an organization without one.
_BEFORE_ALL = datetime(1970, 1, 1, tzinfo=UTC)


def _credit_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        _staging,
        sa.Column("order_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("recipient_id", sa.BigInteger, nullable=False),
        sa.Column("campaign_id", sa.BigInteger, nullable=False),
        sa.Column("organization_id", sa.BigInteger, nullable=False),
        sa.Column("match_type", sa.String(16), nullable=False),
        sa.Column("revenue_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        prefixes=["TEMPORARY"],
    )


_keys = sa.Table(
    "attribution_keys",
    _staging,
    sa.Column("key", sa.Text, primary_key=True),
    prefixes=["TEMPORARY"],
)
_decided_attributions = _credit_table("attribution_decided")
_decided_holdout = _credit_table("attribution_decided_holdout")


@dataclass(frozen=True)
class AttributionInputs:
    """One run's frames (columns: the ``*_COLUMNS`` of this module; times are UTC
    ``datetime64``, keys ``str`` with NaN for none)."""

    orders: pd.DataFrame
    codes: pd.DataFrame
    mailed: pd.DataFrame
    holdouts: pd.DataFrame
    #: When the holdouts' campaigns mailed (campaign_id, mailed_at): their mail dates.
    mailings: pd.DataFrame


@dataclass(frozen=True)
class CreditWrites:
    inserted: int = 0
    updated: int = 0
    removed: int = 0


@dataclass(frozen=True)
class WriteCounts:
    attributions: CreditWrites
    holdout_matches: CreditWrites


@dataclass(frozen=True)
class Violations:
    """What an asset check found: how many rows break the rule, and a few order ids."""

    count: int
    order_ids: list[int]


def empty_frame(columns: Mapping[str, Kind]) -> pd.DataFrame:
    return _typed(pd.DataFrame({name: [] for name in columns}), columns)


def _typed(frame: pd.DataFrame, columns: Mapping[str, Kind]) -> pd.DataFrame:
    for name, kind in columns.items():
        column = frame[name]
        if kind == "int":
            frame[name] = column.astype("int64")
        elif kind == "str":
            frame[name] = column.astype("str").where(column.notna() & (column != ""))
        elif kind == "bool":
            frame[name] = column.isin([True, 1, "t", "true", "1"]).astype(bool)
        elif kind == "time":
            frame[name] = pd.to_datetime(column.astype("int64"), unit="us", utc=True)
    return frame


class AttributionGateway:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect.name

    # -- time as exact microseconds, and the window end, in each dialect ------------------

    def _epoch_us(self, column: Any) -> Any:
        """A stored time as microseconds since the epoch, exactly."""
        if self.dialect == "postgresql":
            return sa.cast(sa.extract("epoch", column) * 1_000_000, sa.BigInteger)
        # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' and its date functions round fractions
        # to milliseconds: the whole seconds and the microseconds are read apart.
        text = sa.type_coerce(column, sa.String)
        seconds = sa.cast(sa.func.strftime("%s", sa.func.substr(text, 1, 19)), sa.BigInteger)
        return seconds * 1_000_000 + sa.cast(sa.func.substr(text, 21, 6), sa.BigInteger)

    def _window_end(self, sent_at: Any, days: Any) -> Any:
        """``sent_at`` plus ``days`` whole days of 24 hours (the rule of
        ``domain.attribution.window_end``), exactly, in SQL."""
        if self.dialect == "postgresql":
            return sent_at + days * sa.literal_column("INTERVAL '24 hours'", sa.Interval)
        # The days are added to the whole seconds and the fraction is kept as it was, so the
        # text compares exactly with other stored times.
        text = sa.type_coerce(sent_at, sa.String)
        shift = sa.literal("+") + sa.cast(days, sa.String) + sa.literal(" days")
        whole = sa.func.datetime(sa.func.substr(text, 1, 19), shift, type_=sa.String)
        return whole + sa.func.substr(text, 20, type_=sa.String)

    # -- which orders ----------------------------------------------------------------------

    @property
    def single_writer(self) -> bool:
        """True when one transaction at a time can write (SQLite): groups go one by one."""
        return self.dialect != "postgresql"

    def lock(self, organization_ids: Sequence[int]) -> None:
        """Wait for any other attribution transaction holding one of these organizations to
        end, then hold them until this one ends (PostgreSQL: one transaction-scoped advisory
        lock per organization, taken in id order so two runs never wait for each other in a
        cycle; SQLite: the write lock every transaction takes is enough)."""
        if self.dialect != "postgresql":
            return
        keys = sorted({(LOCK_KEY << 32) | int(org) for org in organization_ids})
        key = sa.column("key", sa.BigInteger)
        self.session.execute(
            sa.select(sa.func.count(sa.func.pg_advisory_xact_lock(key))).select_from(
                sa.func.unnest(sa.cast(sa.literal(keys), sa.ARRAY(sa.BigInteger))).alias("key")
            )
        )

    def _invalid_credits(
        self,
        now: datetime | None = None,
        organization_ids: Sequence[int] | None = None,
        columns: Sequence[Any] = (Order.id.label("order_id"), Order.organization_id),
    ) -> sa.Select[Any]:
        """``columns`` of the orders whose attribution is to a recipient not mailed, or
        outside the recipient's window; of orders dated at or before ``now`` and of these
        organizations, when given."""
        end = self._window_end(Recipient.sent_at, Campaign.attribution_window_days)
        stmt = (
            sa.select(*columns)
            .select_from(Attribution)
            .join(Order, Order.id == Attribution.order_id)
            .join(Recipient, Recipient.id == Attribution.recipient_id)
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                sa.or_(
                    Recipient.status.not_in(_MAILED),
                    Recipient.sent_at.is_(None),
                    Order.ordered_at < Recipient.sent_at,
                    Order.ordered_at >= end,
                )
            )
        )
        if now is not None:
            stmt = stmt.where(Order.ordered_at <= now)
        if organization_ids is not None:
            stmt = stmt.where(Order.organization_id.in_(list(organization_ids)))
        return stmt

    def _to_examine(
        self,
        now: datetime,
        organization_ids: Sequence[int] | None = None,
        columns: Sequence[Any] = (Order.id.label("order_id"), Order.organization_id),
    ) -> list[sa.Select[Any]]:
        """``columns`` of the orders to examine (see the module's docstring), of these
        organizations or of all, by reason: changed since the watermark, waited, credited
        to a recipient no longer valid (an order may come by more than one). Each reason is
        its own query, so each can use its index: a tick reads the few orders changed since
        the watermark, not the table."""
        state = AttributionState
        watermark = sa.func.coalesce(state.examined_through, sa.literal(_BEFORE_ALL, UTCDateTime()))
        changed = (
            sa.select(*columns)
            .select_from(Organization)
            .outerjoin(state, state.organization_id == Organization.id)
            .join(
                Order,
                sa.and_(Order.organization_id == Organization.id, Order.updated_at > watermark),
            )
            .where(Order.ordered_at <= now)
        )
        waited = (
            sa.select(*columns)
            .select_from(state)
            .join(
                Order,
                sa.and_(
                    Order.organization_id == state.organization_id,
                    Order.ordered_at > state.ordered_through,
                ),
            )
            .where(Order.ordered_at <= now)
        )
        if organization_ids is not None:
            orgs = list(organization_ids)
            changed = changed.where(Organization.id.in_(orgs))
            waited = waited.where(state.organization_id.in_(orgs))
        return [changed, waited, self._invalid_credits(now, organization_ids, columns)]

    def pending_by_organization(self, now: datetime) -> dict[int, int]:
        """How many orders each organization has to examine (an order examined for two
        reasons counts twice: the counts only size the groups)."""
        pending = sa.union_all(*self._to_examine(now)).subquery()
        rows = self.session.execute(
            sa.select(pending.c.organization_id, sa.func.count()).group_by(
                pending.c.organization_id
            )
        )
        return {organization_id: count for organization_id, count in rows}

    def oldest_write_in_flight(self) -> datetime | None:
        """When the oldest other transaction of this database that has written and not yet
        committed began (PostgreSQL; None when there is none, and always on SQLite, where a
        run holds the write lock for its whole transaction). Its changes may carry stamps
        older than the run's start and become visible after the run read."""
        if self.dialect != "postgresql":
            return None
        return self.session.scalar(
            sa.text(
                "SELECT min(xact_start) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_xid IS NOT NULL"
            ).columns(sa.column("min", UTCDateTime()))
        )

    def advance(
        self,
        organization_ids: Sequence[int],
        examined_through: datetime,
        ordered_through: datetime,
        at: datetime,
    ) -> None:
        """Set the organizations' watermark: every change stamped at or before
        ``examined_through`` of their orders dated at or before ``ordered_through`` has
        been examined (in the transaction that wrote the credits)."""
        orgs = sorted(set(organization_ids))
        if not orgs:
            return
        stmt = dialect_insert(self.session)(AttributionState).values(
            [
                {
                    "organization_id": org,
                    "examined_through": examined_through,
                    "ordered_through": ordered_through,
                    "updated_at": at,
                }
                for org in orgs
            ]
        )
        self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[AttributionState.organization_id],
                set_={
                    name: stmt.excluded[name]
                    for name in ("examined_through", "ordered_through", "updated_at")
                },
            )
        )

    def forget(self, organization_ids: Sequence[int]) -> int:
        """Drop these organizations' watermarks: the next run examines every order of theirs
        (after a campaign's attribution window changed, say). Returns how many were held."""
        result = self.session.execute(
            sa.delete(AttributionState).where(
                AttributionState.organization_id.in_(sorted(set(organization_ids)))
            )
        )
        return _rowcount(result)

    # -- frames ------------------------------------------------------------------------------

    def load(
        self,
        organization_ids: Sequence[int],
        now: datetime,
        *,
        key_filter_max_orders: int = KEY_FILTER_MAX_ORDERS,
    ) -> AttributionInputs:
        """The orders of these organizations to examine, their discount codes, and the
        organizations' mailed and holdout recipients: all of them, or, when there are at
        most ``key_filter_max_orders`` orders to examine, those sharing a key (email key,
        address key, offer code) with one of the orders - the only ones that can match.
        The examined orders' ids stay staged for :meth:`write`, in this transaction."""
        orgs = list(organization_ids)
        columns = (
            Order.id.label("order_id"),
            Order.organization_id,
            Order.email_key,
            Order.address_key,
            Order.total_minor,
            Order.refunded_minor,
            Order.currency,
            self._epoch_us(Order.ordered_at).label("ordered_at"),
            Order.cancelled,
            Order.discount_codes,
        )
        found = self._frame(
            sa.union_all(*self._to_examine(now, orgs, columns)),
            {**ORDER_COLUMNS, "discount_codes": "json"},
        ).drop_duplicates("order_id", ignore_index=True)
        code_frame = _discount_codes(found)
        order_frame = found.drop(columns="discount_codes")
        # The examined orders, for the writes of this transaction.
        _examined.drop(self.session.connection(), checkfirst=True)
        self._stage(_examined, order_frame[["order_id"]])

        recipient = (
            Recipient.id.label("recipient_id"),
            Recipient.organization_id,
            Recipient.campaign_id,
            Recipient.email_key,
            Recipient.address_key,
            Recipient.offer_code,
        )
        window = Campaign.attribution_window_days.label("window_days")
        mailed = (
            sa.select(*recipient, self._epoch_us(Recipient.sent_at).label("mailed_at"), window)
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                Recipient.organization_id.in_(orgs),
                Recipient.status.in_(_MAILED),
                Recipient.sent_at.is_not(None),
            )
        )
        holdouts = (
            sa.select(*recipient, window, self._epoch_us(Recipient.created_at).label("joined_at"))
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                Recipient.organization_id.in_(orgs),
                Recipient.status == RecipientStatus.HOLDOUT.value,
            )
        )
        by_keys = len(order_frame) <= key_filter_max_orders
        if by_keys:
            self._stage(_keys, _order_keys(order_frame, code_frame))
            # Offer codes are stored normalized (``domain.offer_codes``), as the keys are.
            staged = sa.select(_keys.c.key)
            shares = sa.or_(
                Recipient.email_key.in_(staged),
                Recipient.address_key.in_(staged),
                Recipient.offer_code.in_(staged),
            )
            mailed, holdouts = mailed.where(shares), holdouts.where(shares)
        mailed_frame = self._frame(mailed, MAILED_COLUMNS)
        holdout_frame = self._frame(holdouts, HOLDOUT_COLUMNS)
        if not by_keys:
            mailings = mailed_frame[list(MAILING_COLUMNS)]
        else:
            _keys.drop(self.session.connection())
            mailings = self._mailings(holdout_frame)
        return AttributionInputs(
            orders=order_frame,
            codes=code_frame,
            mailed=mailed_frame,
            holdouts=holdout_frame,
            mailings=mailings,
        )

    def _mailings(self, holdouts: pd.DataFrame) -> pd.DataFrame:
        """The mailings of the holdouts' campaigns since the first of them joined."""
        if holdouts.empty:
            return empty_frame(MAILING_COLUMNS)
        first_joined = holdouts["joined_at"].min().to_pydatetime()
        stmt = sa.select(
            Recipient.campaign_id, self._epoch_us(Recipient.sent_at).label("mailed_at")
        ).where(
            Recipient.campaign_id.in_(sorted({int(c) for c in holdouts["campaign_id"]})),
            Recipient.status.in_(_MAILED),
            Recipient.sent_at >= first_joined,
        )
        return self._frame(stmt, MAILING_COLUMNS)

    def _frame(
        self, stmt: sa.Select[Any] | sa.CompoundSelect, columns: Mapping[str, Kind]
    ) -> pd.DataFrame:
        names = list(columns)
        if self.dialect != "postgresql":
            rows = self.session.execute(stmt).all()
            if not rows:
                return empty_frame(columns)
            return _typed(pd.DataFrame.from_records(rows, columns=names), columns)
        frame = copy_frame(
            self.session,
            stmt,
            names=names,
            dtype={n: ("int64" if k in ("int", "time") else "str") for n, k in columns.items()},
        )
        if frame.empty:
            return empty_frame(columns)
        return _typed(frame, columns)

    def _cursor(self) -> Any:
        return self.session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    # -- writes --------------------------------------------------------------------------------

    def _stage(self, table: sa.Table, frame: pd.DataFrame) -> None:
        table.create(self.session.connection())
        if frame.empty:
            return
        names = [c.name for c in table.columns]
        if self.dialect == "postgresql":
            data = frame[names].to_csv(index=False, header=False)
            with (
                self._cursor() as cursor,
                cursor.copy(
                    f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT csv)"
                ) as copy,
            ):
                copy.write(data)
            # The planner needs a staged table's size to join it well.
            self.session.execute(sa.text(f"ANALYZE {table.name}"))
            return
        rows = cast(list[dict[str, Any]], frame[names].to_dict("records"))
        self.session.execute(sa.insert(table), rows)

    def write(
        self, attributions: pd.DataFrame, holdout_matches: pd.DataFrame, now: datetime
    ) -> WriteCounts:
        """Make the credits of the orders :meth:`load` examined (in this transaction) be
        exactly ``attributions`` and ``holdout_matches`` (:data:`CREDIT_COLUMNS`); what is
        stored already as decided is not written again."""
        # In recipient order, the foreign-key checks of the inserts read recipients in order.
        self._stage(_decided_attributions, attributions.sort_values("recipient_id"))
        self._stage(_decided_holdout, holdout_matches.sort_values("recipient_id"))
        counts = WriteCounts(
            attributions=self._apply(Attribution, _decided_attributions, "attributed_at", now),
            holdout_matches=self._apply(HoldoutMatch, _decided_holdout, "matched_at", now),
        )
        for table in (_examined, _decided_attributions, _decided_holdout):
            table.drop(self.session.connection())
        return counts

    def _apply(self, model: Any, decided: sa.Table, stamp: str, now: datetime) -> CreditWrites:
        target = model.__table__
        same = sa.select(decided.c.order_id).where(
            decided.c.order_id == target.c.order_id,
            decided.c.recipient_id == target.c.recipient_id,
            decided.c.campaign_id == target.c.campaign_id,
            decided.c.match_type == target.c.match_type,
        )
        removed = self.session.execute(
            sa.delete(target).where(
                target.c.order_id.in_(sa.select(_examined.c.order_id)), ~sa.exists(same)
            )
        )
        updated = self.session.execute(
            sa.update(target)
            .where(
                target.c.order_id == decided.c.order_id,
                sa.or_(
                    target.c.revenue_minor != decided.c.revenue_minor,
                    target.c.currency != decided.c.currency,
                ),
            )
            .values(revenue_minor=decided.c.revenue_minor, currency=decided.c.currency)
        )
        # What is stored now for an examined order is what was decided: the rest is new.
        self.session.execute(
            sa.delete(decided).where(
                sa.exists(
                    sa.select(target.c.order_id).where(target.c.order_id == decided.c.order_id)
                )
            )
        )
        inserted = self.session.scalar(sa.select(sa.func.count()).select_from(decided)) or 0
        names = list(CREDIT_COLUMNS)
        stamped = sa.literal(now, target.c[stamp].type)
        self.session.execute(
            sa.insert(target).from_select(
                [*names, stamp], sa.select(*(decided.c[n] for n in names), stamped)
            )
        )
        return CreditWrites(
            inserted=inserted, updated=_rowcount(updated), removed=_rowcount(removed)
        )

    # -- what the asset checks read ---------------------------------------------------------

    def _violations(self, order_ids: sa.Select[Any], examples: int = 10) -> Violations:
        found = order_ids.subquery()
        count = self.session.scalar(sa.select(sa.func.count()).select_from(found)) or 0
        first = self.session.scalars(
            sa.select(found.c[0]).order_by(found.c[0]).limit(examples)
        ).all()
        return Violations(count=count, order_ids=list(first))

    def orders_credited_twice(self) -> Violations:
        """Orders with more than one attribution, or more than one holdout match."""
        twice = sa.union(
            *(
                sa.select(model.order_id).group_by(model.order_id).having(sa.func.count() > 1)
                for model in (Attribution, HoldoutMatch)
            )
        )
        return self._violations(sa.select(twice.subquery().c.order_id))

    def credits_across_organizations(self) -> Violations:
        """Credits whose order, recipient or campaign does not exist or is of another
        organization, or whose campaign is not the recipient's (the credit tables have no
        foreign keys: this holds their references)."""
        found = []
        for model in (Attribution, HoldoutMatch):
            found.append(
                sa.select(model.order_id)
                .outerjoin(Order, Order.id == model.order_id)
                .outerjoin(Recipient, Recipient.id == model.recipient_id)
                .outerjoin(Campaign, Campaign.id == model.campaign_id)
                .where(
                    sa.or_(
                        Order.id.is_(None),
                        Recipient.id.is_(None),
                        Campaign.id.is_(None),
                        Order.organization_id != model.organization_id,
                        Recipient.organization_id != model.organization_id,
                        Campaign.organization_id != model.organization_id,
                        Recipient.campaign_id != model.campaign_id,
                    )
                )
            )
        return self._violations(sa.select(sa.union(*found).subquery().c.order_id))

    def negative_revenue(self) -> Violations:
        found = sa.union(
            *(
                sa.select(model.order_id).where(model.revenue_minor < 0)
                for model in (Attribution, HoldoutMatch)
            )
        )
        return self._violations(sa.select(found.subquery().c.order_id))

    def outside_window(self) -> Violations:
        """Attributions to a recipient not mailed, or outside the recipient's window."""
        return self._violations(self._invalid_credits())


def _discount_codes(orders: pd.DataFrame) -> pd.DataFrame:
    """(order_id, code) for each discount code of each order (``discount_codes``: the JSON
    list as text, or as a list)."""
    raw = orders["discount_codes"]
    some = orders.loc[raw.notna() & raw.map(lambda v: bool(v) and v != "[]")]
    if some.empty:
        return empty_frame(CODE_COLUMNS)
    lists = some["discount_codes"].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    codes = (
        pd.DataFrame({"order_id": some["order_id"], "code": lists})
        .explode("code", ignore_index=True)
        .dropna()
    )
    return _typed(codes, CODE_COLUMNS)


def _order_keys(orders: pd.DataFrame, codes: pd.DataFrame) -> pd.DataFrame:
    """Every usable key of the orders (email keys, address keys, normalized codes), once."""
    keys = pd.concat(
        [orders["email_key"], orders["address_key"], codes["code"].str.strip().str.upper()],
        ignore_index=True,
    )
    keys = keys[keys.notna() & (keys != "")].drop_duplicates()
    return pd.DataFrame({"key": keys.astype("str")})


def _rowcount(result: Any) -> int:
    return max(int(getattr(result, "rowcount", 0) or 0), 0)

"""The metrics gateway: the base tables aggregated by New York day, and the metrics tables'
rows replaced a range of days at a time.

Aggregation happens in SQL (``GROUP BY``), so a year of orders never travels to Python:
only groups do. The day of a time is computed by the database: PostgreSQL converts with its
time zone database (``timezone('America/New_York', t)::date``); SQLite, which has no time
zones, shifts each stretch of constant UTC offset by that offset
(``domain.metrics.utc_offset_segments``). Both agree with ``domain.metrics.day_of``, DST
days included (tests run on both).

The one row-by-row read is :meth:`MetricsGateway.recipient_timelines`: recipients whose
status changed since a moment (an index on ``status_changed_at`` finds them), whose history
is rebuilt in ``services.metrics``.

A refresh is one transaction. On PostgreSQL it is SERIALIZABLE
(:meth:`MetricsGateway.serializable`, called first): what is read from the base tables, the
rows written and the reconciliation read back all see one snapshot, and two refreshes of the
same days cannot both commit (the loser fails with a serialization error, which
:func:`is_retryable` recognises, and is run again). SQLite transactions here begin
IMMEDIATE: a refresh holds the write lock from its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from pandas.api.types import is_datetime64_any_dtype, is_integer_dtype
from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    Select,
    String,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mail_pipeline.db.frames import copy_frame
from mail_pipeline.db.models import (
    Attribution,
    Campaign,
    CampaignResult,
    DailyOrderMetrics,
    DailyRecipientMetrics,
    DailySpend,
    HoldoutMatch,
    Mailpiece,
    Order,
    Recipient,
)
from mail_pipeline.domain.mailpieces import MailpieceStatus
from mail_pipeline.domain.metrics import (
    HOLDOUT_GROUP,
    MAILED_GROUP,
    MATCH_TYPES,
    METRICS_TIMEZONE,
    DayRange,
    utc_offset_segments,
)

#: The ``kind`` of an order matched to a holdout recipient, beside the attribution methods.
HOLDOUT_KIND = "holdout"

#: PostgreSQL settings of a refresh's transaction (see ``MetricsGateway.serializable``).
REFRESH_SETTINGS = ("jit = off", "work_mem = '64MB'", "random_page_cost = 1.1")
#: SQLSTATEs after which a refresh is simply run again: serialization failure, deadlock.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is PostgreSQL refusing a transaction that may succeed if re-run."""
    return isinstance(error, DBAPIError) and (
        getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
    )


def _created() -> ColumnElement[Any]:
    """When the recipient came to exist: its creation, no later than its last status change
    (``domain.metrics.timeline``)."""
    last = Recipient.status_changed_at
    return case((Recipient.created_at < last, Recipient.created_at), else_=last)


def _milestone(moment: Any) -> ColumnElement[Any]:
    """A milestone's time as the metrics count it: between the recipient's creation and its
    last status change (NULL stays NULL)."""
    first, last = _created(), Recipient.status_changed_at
    return case(
        (moment.is_(None), None), (moment < first, first), (moment > last, last), else_=moment
    )


def _net_revenue() -> ColumnElement[Any]:
    """``domain.metrics.net_revenue_minor`` in SQL."""
    return case(
        (Order.cancelled, 0),
        (Order.total_minor > Order.refunded_minor, Order.total_minor - Order.refunded_minor),
        else_=0,
    )


def _counted(expression: Any) -> ColumnElement[Any]:
    """``expression`` for orders that count (not cancelled), else 0."""
    return case((Order.cancelled, 0), else_=expression)


def _as_dates(values: pd.Series) -> pd.Series:
    """Days as ``datetime.date`` whatever the driver returned (PostgreSQL dates, SQLite
    text)."""
    if values.empty or isinstance(values.iloc[0], date):
        return values.astype(object)
    return pd.Series(pd.to_datetime(values).dt.date, index=values.index, dtype=object)


def _python(values: pd.Series, column: Any) -> list[Any]:
    """A frame's column as the Python values of a table column: None for missing values,
    ints for integer columns (pandas keeps an integer column with gaps as floats)."""
    out = values.astype(object).where(values.notna(), None).tolist()
    if isinstance(column.type, Integer):
        out = [None if v is None else int(v) for v in out]
    return out


def _iso(values: pd.Series) -> pd.Series:
    """Dates or times as ISO text (what ``COPY`` reads), each distinct value formatted once:
    a refresh's rows share a few hundred days and one ``computed_at``, and formatting every
    value took longer than writing the rows."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = np.array([value.isoformat() for value in uniques] + [""], dtype=object)
    return pd.Series(texts[codes], index=values.index, dtype=object)


class MetricsGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def is_postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def serializable(self) -> None:
        """Run this transaction SERIALIZABLE on PostgreSQL, with the settings of a refresh;
        call before any other statement of the transaction.

        The settings (``SET LOCAL``: this transaction only): no JIT (each query runs once;
        compiling the aggregation of ten million orders cost a second more than it saved),
        and ``work_mem`` enough to sort and group a year of attributed orders in memory
        (with the default 4 MB the sort spilled 200 MB per worker to disk), and the
        ``random_page_cost`` of storage that reads at random about as fast as in order (SSD,
        or pages in memory): with the default 4 the planner joined a year's credits to their
        orders by scanning and hashing all ten million orders (10 s) rather than looking up
        each credit's order by key (5 s); a day's refresh looks them up either way."""
        if self.is_postgres:
            self.session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
            for setting in REFRESH_SETTINGS:
                self.session.execute(text(f"SET LOCAL {setting}"))

    # --- days ----------------------------------------------------------------------------

    def local_day(self, column: Any, days: DayRange) -> ColumnElement[Any]:
        """The New York day of ``column`` (a UTC time inside ``days``) as SQL."""
        if self.is_postgres:
            return cast(func.timezone(METRICS_TIMEZONE.key, column), Date)
        segments = utc_offset_segments(days.start, days.end)

        def shifted(minutes: int) -> ColumnElement[Any]:
            return func.date(column, f"{minutes:+d} minutes")

        minutes = [int(segment.offset.total_seconds() // 60) for segment in segments]
        if len(segments) == 1:
            return shifted(minutes[0])
        return case(
            *[
                (column < segment.end, shifted(offset))
                for segment, offset in zip(segments[:-1], minutes[:-1], strict=True)
            ],
            else_=shifted(minutes[-1]),
        )

    def _frame(
        self, statement: Select[*tuple[Any, ...]], *, days: Sequence[str] = ()
    ) -> pd.DataFrame:
        """The rows of ``statement`` as a frame, ``days`` columns as ``datetime.date``. On
        PostgreSQL the rows come by ``COPY`` (``db.frames.copy_frame``): a year's credited
        orders or a million recipients' timelines in a second rather than several."""
        if self.is_postgres:
            frame = copy_frame(self.session, statement)
        else:
            result = self.session.execute(statement)
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        for column in days:
            frame[column] = _as_dates(frame[column])
        return frame

    # --- orders --------------------------------------------------------------------------

    def _order_figures(self, days: DayRange) -> list[Any]:
        day = self.local_day(Order.ordered_at, days).label("day")
        refund = case(
            (Order.refunded_minor > Order.total_minor, Order.total_minor),
            else_=Order.refunded_minor,
        )
        return [
            day,
            Order.organization_id,
            Order.currency,
            func.sum(_counted(1)).label("orders"),
            func.sum(case((Order.cancelled, 1), else_=0)).label("cancelled_orders"),
            func.sum(_counted(Order.total_minor)).label("gross_minor"),
            func.sum(_counted(refund)).label("refunded_minor"),
        ]

    def order_totals(self, days: DayRange) -> pd.DataFrame:
        """The orders of ``days`` per day, organization and currency: ``orders`` and
        ``cancelled_orders``, and the ``gross_minor`` and ``refunded_minor`` of the orders
        that count. One pass over the orders, no join."""
        figures = self._order_figures(days)
        statement = (
            select(*figures)
            .where(Order.ordered_at >= days.start, Order.ordered_at < days.end)
            .group_by(*figures[:3])
        )
        return self._frame(statement, days=["day"])

    def _credit_rows(self) -> Any:
        """Both credit tables as one (order_id, campaign_id, kind): attributions with their
        method as ``kind``, holdout matches with ``holdout``."""
        return union_all(
            select(
                Attribution.order_id,
                Attribution.campaign_id,
                type_coerce(Attribution.match_type, String).label("kind"),
            ),
            select(
                HoldoutMatch.order_id,
                HoldoutMatch.campaign_id,
                literal(HOLDOUT_KIND, String).label("kind"),
            ),
        ).subquery("credits")

    def credited_orders(self, days: DayRange) -> pd.DataFrame:
        """Like :meth:`order_totals`, for the orders credited to a campaign, per campaign and
        ``match_type``: an attribution's method, or ``holdout`` for an order matched to a
        holdout recipient (an order may have one of each). Driven by the credits (a tenth of
        the orders, say), in one pass over both credit tables."""
        figures = self._order_figures(days)
        credits = self._credit_rows()
        statement = (
            select(*figures[:3], credits.c.campaign_id, credits.c.kind.label("match_type"))
            .add_columns(*figures[3:])
            .select_from(credits)
            .join(Order, Order.id == credits.c.order_id)
            .where(Order.ordered_at >= days.start, Order.ordered_at < days.end)
            .group_by(*figures[:3], credits.c.campaign_id, credits.c.kind)
        )
        return self._frame(statement, days=["day"])

    def source_order_totals(self, days: DayRange) -> pd.DataFrame:
        """Straight from ``orders`` (no days): per organization and currency, the orders of
        the range that count, the cancelled ones, and their revenue."""
        statement = (
            select(
                Order.organization_id,
                Order.currency,
                func.sum(_counted(1)).label("orders"),
                func.sum(case((Order.cancelled, 1), else_=0)).label("cancelled_orders"),
                func.sum(_net_revenue()).label("revenue_minor"),
            )
            .where(Order.ordered_at >= days.start, Order.ordered_at < days.end)
            .group_by(Order.organization_id, Order.currency)
        )
        return self._frame(statement)

    def source_credit_totals(self, days: DayRange) -> pd.DataFrame:
        """Straight from ``attributions`` and ``holdout_matches``: per organization, campaign
        and kind (``offer_code``, ``email``, ``address``, or ``holdout``), the orders of the
        range that count and their revenue."""
        credits = self._credit_rows()
        statement = (
            select(
                Order.organization_id,
                credits.c.campaign_id,
                credits.c.kind,
                func.count().label("orders"),
                func.sum(_net_revenue()).label("revenue_minor"),
            )
            .select_from(credits)
            .join(Order, Order.id == credits.c.order_id)
            .where(
                Order.ordered_at >= days.start,
                Order.ordered_at < days.end,
                Order.cancelled.is_(False),
            )
            .group_by(Order.organization_id, credits.c.campaign_id, credits.c.kind)
        )
        return self._frame(statement)

    # --- recipients ----------------------------------------------------------------------

    def recipient_timelines(self, since: datetime) -> pd.DataFrame:
        """One row per recipient whose status changed at or after ``since``: its campaign,
        status and milestone times (``datetime64[ns, UTC]``). Nothing in the history of any
        other recipient happened at or after ``since``.

        Times travel as numbers (PostgreSQL: microseconds since the epoch; SQLite: its UTC
        text), not as a million datetime objects each."""
        times = ("created_at", "status_changed_at", "proofed_at", "sent_at", "received_at")
        statement = select(
            Recipient.organization_id,
            Recipient.campaign_id,
            type_coerce(Recipient.status, String).label("status"),
            *(self._raw_time(getattr(Recipient, name)).label(name) for name in times),
        ).where(Recipient.status_changed_at >= since)
        frame = self._frame(statement)
        for name in times:
            frame[name] = self._times(frame[name])
        return frame

    def _raw_time(self, column: Any) -> ColumnElement[Any]:
        if self.is_postgres:
            return cast(func.extract("epoch", column) * 1_000_000, BigInteger)
        return type_coerce(column, String)

    def _times(self, values: pd.Series) -> pd.Series:
        if self.is_postgres:
            micros = pd.to_numeric(values, errors="coerce").astype("Int64")
            return pd.to_datetime(micros, unit="us", utc=True).astype("datetime64[ns, UTC]")
        return pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[ns, UTC]")

    def status_counts(self) -> pd.DataFrame:
        """Recipients now, per campaign (with its organization) and status."""
        counts = (
            select(
                Recipient.campaign_id,
                type_coerce(Recipient.status, String).label("status"),
                func.count().label("recipients"),
            )
            .group_by(Recipient.campaign_id, Recipient.status)
            .subquery()
        )
        statement = select(
            Campaign.organization_id, counts.c.campaign_id, counts.c.status, counts.c.recipients
        ).join(Campaign, Campaign.id == counts.c.campaign_id)
        return self._frame(statement)

    def piece_groups(self, days: DayRange) -> pd.DataFrame:
        """Postcards the printers accepted in ``days``, per day, campaign and currency (NULL
        for pieces without a price): ``postcards``, ``priced`` (with a cost and a currency)
        and their ``spend_minor``."""
        day = self.local_day(Mailpiece.accepted_at, days).label("day")
        priced = and_(Mailpiece.cost_minor.is_not(None), Mailpiece.currency.is_not(None))
        statement = (
            select(
                day,
                Mailpiece.organization_id,
                Mailpiece.campaign_id,
                Mailpiece.currency,
                func.count().label("postcards"),
                func.sum(case((priced, 1), else_=0)).label("priced"),
                func.sum(case((priced, Mailpiece.cost_minor), else_=0)).label("spend_minor"),
            )
            .where(Mailpiece.accepted_at >= days.start, Mailpiece.accepted_at < days.end)
            .group_by(day, Mailpiece.organization_id, Mailpiece.campaign_id, Mailpiece.currency)
        )
        return self._frame(statement, days=["day"])

    def returned_groups(self, days: DayRange) -> pd.DataFrame:
        """Pieces whose printer reported them returned, by the day of that last report."""
        day = self.local_day(Mailpiece.last_event_at, days).label("day")
        statement = (
            select(
                day,
                Mailpiece.organization_id,
                Mailpiece.campaign_id,
                func.count().label("returned"),
            )
            .where(
                Mailpiece.status == MailpieceStatus.RETURNED,
                Mailpiece.last_event_at >= days.start,
                Mailpiece.last_event_at < days.end,
            )
            .group_by(day, Mailpiece.organization_id, Mailpiece.campaign_id)
        )
        return self._frame(statement, days=["day"])

    def source_recipient_totals(self, days: DayRange) -> pd.DataFrame:
        """Straight from ``recipients`` (no days), per organization: recipients created in
        the range, mailed in the range, and existing when it ended (times between the
        creation and the last status change, as the metrics count them)."""
        created = _created()
        mailed = _milestone(Recipient.sent_at)

        def within(moment: ColumnElement[Any]) -> ColumnElement[Any]:
            return and_(moment >= days.start, moment < days.end)

        statement = select(
            Recipient.organization_id,
            func.sum(case((within(created), 1), else_=0)).label("created"),
            func.sum(case((within(mailed), 1), else_=0)).label("mailed"),
            func.sum(case((created < days.end, 1), else_=0)).label("recipients"),
        ).group_by(Recipient.organization_id)
        return self._frame(statement)

    def source_piece_totals(self, days: DayRange) -> pd.DataFrame:
        """Straight from ``mailpieces``, per organization and currency (NULL: unpriced):
        pieces accepted in the range and the spend of the priced ones."""
        priced = and_(Mailpiece.cost_minor.is_not(None), Mailpiece.currency.is_not(None))
        statement = (
            select(
                Mailpiece.organization_id,
                case((priced, Mailpiece.currency), else_=None).label("currency"),
                func.count().label("postcards"),
                func.sum(case((priced, Mailpiece.cost_minor), else_=0)).label("spend_minor"),
            )
            .where(Mailpiece.accepted_at >= days.start, Mailpiece.accepted_at < days.end)
            .group_by(Mailpiece.organization_id, case((priced, Mailpiece.currency), else_=None))
        )
        return self._frame(statement)

    # --- campaign results ----------------------------------------------------------------

    def campaigns(self) -> pd.DataFrame:
        """Every campaign: ``campaign_id``, ``organization_id``, ``name``."""
        statement = select(
            Campaign.id.label("campaign_id"), Campaign.organization_id, Campaign.name
        )
        return self._frame(statement)

    def converted_recipients(self) -> pd.DataFrame:
        """Per campaign: mailed recipients (Sent or Received now) with an attributed order
        that counts, and holdout recipients with a matched one (``mailed_converted``,
        ``holdout_converted``)."""
        frames = []
        for table, group, name in (
            (Attribution, MAILED_GROUP, "mailed_converted"),
            (HoldoutMatch, HOLDOUT_GROUP, "holdout_converted"),
        ):
            statement = (
                select(
                    Recipient.campaign_id,
                    func.count(table.recipient_id.distinct()).label(name),
                )
                .select_from(table)
                .join(Order, Order.id == table.order_id)
                .join(Recipient, Recipient.id == table.recipient_id)
                .where(Order.cancelled.is_(False), Recipient.status.in_(sorted(group)))
                .group_by(Recipient.campaign_id)
            )
            frames.append(self._frame(statement).set_index("campaign_id"))
        return frames[0].join(frames[1], how="outer").fillna(0).astype("int64").reset_index()

    def attributed_revenue(self) -> pd.DataFrame:
        """Per campaign and currency: attributed orders that count and their revenue."""
        statement = (
            select(
                Attribution.campaign_id,
                Order.currency,
                func.count().label("orders"),
                func.sum(_net_revenue()).label("revenue_minor"),
            )
            .join(Order, Order.id == Attribution.order_id)
            .where(Order.cancelled.is_(False))
            .group_by(Attribution.campaign_id, Order.currency)
        )
        return self._frame(statement)

    def campaign_spend(self) -> pd.DataFrame:
        """Per campaign and currency (NULL: unpriced): pieces the printers accepted and the
        spend of the priced ones."""
        priced = and_(Mailpiece.cost_minor.is_not(None), Mailpiece.currency.is_not(None))
        currency = case((priced, Mailpiece.currency), else_=None)
        statement = (
            select(
                Mailpiece.campaign_id,
                currency.label("currency"),
                func.count().label("postcards"),
                func.sum(case((priced, Mailpiece.cost_minor), else_=0)).label("spend_minor"),
            )
            .where(Mailpiece.accepted_at.is_not(None))
            .group_by(Mailpiece.campaign_id, currency)
        )
        return self._frame(statement)

    # --- the metrics tables --------------------------------------------------------------

    def replace_days(self, table: Table, days: DayRange, rows: pd.DataFrame) -> int:
        """Delete ``table``'s rows of ``days`` and insert ``rows`` (same columns as the
        table, but ``id``) in their place. Returns the rows inserted."""
        self.session.execute(
            delete(table).where(table.c.day >= days.first, table.c.day <= days.last)
        )
        return self._insert(table, rows)

    def replace_all(self, table: Table, rows: pd.DataFrame) -> int:
        self.session.execute(delete(table))
        return self._insert(table, rows)

    def _insert(self, table: Table, rows: pd.DataFrame) -> int:
        """Insert ``rows``: on PostgreSQL the daily tables (a year of days is hundreds of
        thousands of rows) in one ``COPY`` of the frame written as CSV; otherwise one
        multi-row ``INSERT``."""
        if rows.empty:
            return 0
        columns = list(rows.columns)
        if self.is_postgres and table.name in COPIED_TABLES:
            exact = rows.copy()
            for column in columns:  # integers with gaps come as floats (5.0), or objects
                if isinstance(table.c[column].type, Integer) and not is_integer_dtype(rows[column]):
                    exact[column] = pd.array(_python(rows[column], table.c[column]), "Int64")
                elif isinstance(table.c[column].type, Date) or is_datetime64_any_dtype(
                    rows[column]
                ):
                    exact[column] = _iso(rows[column])
            text = exact.to_csv(header=False, index=False)
            raw: Any = self.session.connection().connection.driver_connection
            names = ", ".join(f'"{column}"' for column in columns)
            statement = f'COPY "{table.name}" ({names}) FROM STDIN WITH (FORMAT csv)'
            try:
                with raw.cursor() as cursor, cursor.copy(statement) as copy:
                    copy.write(text)
            except psycopg.Error as error:
                # As SQLAlchemy raises driver errors everywhere else (is_retryable reads it).
                raise DBAPIError.instance(statement, None, error, psycopg.Error, True) from error
            return len(rows)
        values = zip(*(_python(rows[column], table.c[column]) for column in columns), strict=True)
        self.session.execute(
            insert(table), [dict(zip(columns, row, strict=True)) for row in values]
        )
        return len(rows)

    def order_metric_totals(self, days: DayRange) -> pd.DataFrame:
        """The stored order metrics of ``days`` summed per organization and currency."""
        m = DailyOrderMetrics
        statement = (
            select(
                m.organization_id,
                m.currency,
                func.sum(m.orders).label("orders"),
                func.sum(m.cancelled_orders).label("cancelled_orders"),
                func.sum(m.revenue_minor).label("revenue_minor"),
            )
            .where(m.day >= days.first, m.day <= days.last)
            .group_by(m.organization_id, m.currency)
        )
        return self._frame(statement)

    def credit_metric_totals(self, days: DayRange) -> pd.DataFrame:
        """The stored order metrics of ``days`` credited to campaigns, summed per
        organization, campaign and kind (each method, and ``holdout``)."""
        m = DailyOrderMetrics
        kinds = [*MATCH_TYPES, "holdout"]
        statement = (
            select(
                m.organization_id,
                m.campaign_id,
                *(
                    func.sum(getattr(m, f"{kind}_{figure}")).label(f"{kind}_{figure}")
                    for kind in kinds
                    for figure in ("orders", "revenue_minor")
                ),
            )
            .where(m.day >= days.first, m.day <= days.last, m.campaign_id.is_not(None))
            .group_by(m.organization_id, m.campaign_id)
        )
        wide = self._frame(statement)
        parts = [
            wide[["organization_id", "campaign_id"]].assign(
                kind=kind,
                orders=wide[f"{kind}_orders"],
                revenue_minor=wide[f"{kind}_revenue_minor"],
            )
            for kind in kinds
        ]
        return pd.concat(parts, ignore_index=True)

    def negative_revenue_rows(self, days: DayRange) -> pd.DataFrame:
        """Stored order-metrics rows of ``days`` with any negative revenue figure."""
        m = DailyOrderMetrics
        revenue = [column for column in m.__table__.c if column.name.endswith("revenue_minor")]
        statement = select(m.day, m.organization_id, m.campaign_id, m.currency).where(
            m.day >= days.first, m.day <= days.last, or_(*(column < 0 for column in revenue))
        )
        return self._frame(statement, days=["day"])

    def recipient_metric_totals(self, days: DayRange) -> pd.DataFrame:
        """The stored recipient metrics of ``days`` per organization: recipients created and
        mailed, postcards accepted, and recipients at the end of the last day."""
        m = DailyRecipientMetrics
        statement = (
            select(
                m.organization_id,
                func.sum(m.created).label("created"),
                func.sum(m.mailed).label("mailed"),
                func.sum(m.postcards_mailed).label("postcards"),
                func.sum(case((m.day == days.last, m.recipients), else_=0)).label("recipients"),
            )
            .where(m.day >= days.first, m.day <= days.last)
            .group_by(m.organization_id)
        )
        return self._frame(statement)

    def spend_metric_totals(self, days: DayRange) -> pd.DataFrame:
        """The stored spend of ``days`` per organization and currency."""
        statement = (
            select(
                DailySpend.organization_id,
                DailySpend.currency,
                func.sum(DailySpend.spend_minor).label("spend_minor"),
            )
            .where(DailySpend.day >= days.first, DailySpend.day <= days.last)
            .group_by(DailySpend.organization_id, DailySpend.currency)
        )
        return self._frame(statement)

    def days_frame(self, table: Table, days: DayRange) -> pd.DataFrame:
        """``table``'s rows of ``days``."""
        statement = select(table).where(table.c.day >= days.first, table.c.day <= days.last)
        return self._frame(statement, days=["day"])

    def all_rows(self, table: Table) -> pd.DataFrame:
        return self._frame(select(table))


#: The metrics tables, for the services.
ORDER_METRICS: Table = DailyOrderMetrics.__table__  # type: ignore[assignment]
RECIPIENT_METRICS: Table = DailyRecipientMetrics.__table__  # type: ignore[assignment]
SPEND: Table = DailySpend.__table__  # type: ignore[assignment]
CAMPAIGN_RESULTS: Table = CampaignResult.__table__  # type: ignore[assignment]
#: Tables written with ``COPY`` on PostgreSQL (plain columns only: no JSON).
COPIED_TABLES = frozenset({ORDER_METRICS.name, RECIPIENT_METRICS.name, SPEND.name})

"""Attribution of orders to mailed recipients, and of orders to holdout recipients, with
pandas: frames in, frames out, one merge per method for every order of a run at once (never
a query or a Python step per order).

The rules are :mod:`mail_pipeline.domain.attribution`'s (its ``best_match`` is the same rule
for one order); which orders a run examines, how it writes and how each organization's
watermark stands are :mod:`mail_pipeline.db.attribution`'s. :func:`attribute_orders` is the
use case: it computes the run's watermark first (:func:`next_watermark`), then takes the
organizations with orders to examine in groups of at most ``max_orders`` orders (an
organization's orders only ever meet its own recipients, so groups are independent), each
group in one transaction: load, match, write, advance the organizations' watermark. On
PostgreSQL two groups are worked at once (:data:`GROUP_WORKERS`). A failure rolls back its
group alone; the other groups are still worked and stay written, the run then raises the
first failure, and the failed group's orders are examined again by the next run.
Re-running changes nothing: the orders changed within :data:`COMMIT_LAG` of the previous
run are examined again, and a decision equal to what is stored writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pandas as pd

from mail_pipeline.db.attribution import (
    CREDIT_COLUMNS,
    KEY_FILTER_MAX_ORDERS,
    AttributionGateway,
    AttributionInputs,
    CreditWrites,
)
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import utcnow
from mail_pipeline.domain.attribution import MATCH_ORDER, MatchType

#: Orders examined in one transaction at most (an organization with more is one group of
#: its own, and memory grows with it): a first run over a million orders and a million
#: recipients peaks at about 430 MiB in groups of this size (docs/benchmarks.md).
MAX_ORDERS_PER_GROUP = 250_000

#: How far an organization's watermark trails the run's start (``db.attribution``: an order's
#: ``updated_at`` is stamped at most this long before its transaction's first write, by a
#: clock within this of the run's). The order sync stamps a page as its transaction begins
#: and commits within seconds; each run examines again the changes of this last quarter of
#: an hour, three 5-minute ticks' worth, and writes nothing for them when nothing changed.
COMMIT_LAG = timedelta(minutes=15)

#: Groups worked at once on PostgreSQL, each in its own transaction and thread: while the
#: server writes one group's credits, this process loads and matches the next (the two halves
#: take about as long; docs/benchmarks.md). SQLite has one writer: groups go one by one.
GROUP_WORKERS = 2

#: The columns of a candidate frame: a recipient an order may be credited to.
CANDIDATE_COLUMNS = (
    "recipient_id",
    "organization_id",
    "campaign_id",
    "email_key",
    "address_key",
    "offer_code",
    "mailed_at",
    "window_days",
)
MATCH_COLUMNS = ("order_id", "recipient_id", "campaign_id", "match_type")


# -- the rules, on frames ----------------------------------------------------------------


def _usable(keys: pd.Series) -> pd.Series:
    """True where a key can match (present and not empty)."""
    return keys.notna() & (keys != "")


def _codes(values: pd.Series) -> pd.Series:
    """``domain.orders.normalize_code`` on a column."""
    return values.str.strip().str.upper()


def _order_keys(method: MatchType, orders: pd.DataFrame, codes: pd.DataFrame) -> pd.DataFrame:
    """(order_id, organization_id, ordered_at, key) for the orders, by ``method``."""
    base = orders[["order_id", "organization_id", "ordered_at"]]
    if method is MatchType.OFFER_CODE:
        keyed = codes.assign(key=_codes(codes["code"]))[["order_id", "key"]]
        keyed = keyed[_usable(keyed["key"])].drop_duplicates()
        return keyed.merge(base, on="order_id")
    column = "email_key" if method is MatchType.EMAIL else "address_key"
    keyed = orders[[*base.columns, column]].rename(columns={column: "key"})
    return keyed[_usable(keyed["key"])]


def _candidate_keys(method: MatchType, candidates: pd.DataFrame) -> pd.DataFrame:
    """(organization_id, key, recipient_id, campaign_id, mailed_at, window_end)."""
    column = {
        MatchType.OFFER_CODE: "offer_code",
        MatchType.EMAIL: "email_key",
        MatchType.ADDRESS: "address_key",
    }[method]
    keyed = candidates[["organization_id", column, "recipient_id", "campaign_id", "mailed_at"]]
    keyed = keyed.rename(columns={column: "key"})
    if method is MatchType.OFFER_CODE:
        keyed = keyed.assign(key=_codes(keyed["key"]))
    keyed = keyed.assign(
        window_end=candidates["mailed_at"]
        + pd.to_timedelta(candidates["window_days"].astype("int64"), unit="D")
    )
    return keyed[_usable(keyed["key"])]


def match_orders(
    orders: pd.DataFrame, codes: pd.DataFrame, candidates: pd.DataFrame
) -> pd.DataFrame:
    """Each order's recipient among ``candidates``, by ``domain.attribution``'s rules:
    offer code, then email, then address; inside the window; ties to the most recently
    mailed, then the lowest recipient id. Cancelled orders match nothing.

    ``orders``: order_id, organization_id, email_key, address_key, ordered_at, cancelled;
    ``codes``: order_id, code; ``candidates``: :data:`CANDIDATE_COLUMNS`. Returns
    :data:`MATCH_COLUMNS`, one row per matched order.
    """
    remaining = orders.loc[~orders["cancelled"].astype(bool)]
    found = []
    for method in MATCH_ORDER:
        if remaining.empty or candidates.empty:
            break
        pairs = _order_keys(method, remaining, codes).merge(
            _candidate_keys(method, candidates), on=["organization_id", "key"]
        )
        pairs = pairs.loc[
            (pairs["mailed_at"] <= pairs["ordered_at"])
            & (pairs["ordered_at"] < pairs["window_end"])
        ]
        best = pairs.sort_values(
            ["order_id", "mailed_at", "recipient_id"], ascending=[True, False, True]
        ).drop_duplicates("order_id")
        found.append(
            best[["order_id", "recipient_id", "campaign_id"]].assign(match_type=method.value)
        )
        remaining = remaining.loc[~remaining["order_id"].isin(best["order_id"])]
    if not found:
        return pd.DataFrame(
            {
                "order_id": pd.Series(dtype="int64"),
                "recipient_id": pd.Series(dtype="int64"),
                "campaign_id": pd.Series(dtype="int64"),
                "match_type": pd.Series(dtype="str"),
            }
        )
    return pd.concat(found, ignore_index=True)


def holdout_candidates(holdouts: pd.DataFrame, mailings: pd.DataFrame) -> pd.DataFrame:
    """Holdout recipients as candidates: their mail date is the first ``mailed_at`` of their
    campaign's ``mailings`` (campaign_id, mailed_at) at or after they joined it
    (``joined_at``); those whose campaign has not mailed since are left out
    (``domain.attribution.holdout_mail_date``)."""
    columns = [c for c in CANDIDATE_COLUMNS if c != "mailed_at"]
    if holdouts.empty or mailings.empty:
        return holdouts[columns].assign(mailed_at=pd.Series(dtype="datetime64[us, UTC]"))
    sends = mailings[["campaign_id", "mailed_at"]].drop_duplicates().sort_values("mailed_at")
    joined = pd.merge_asof(
        holdouts[[*columns, "joined_at"]].sort_values("joined_at"),
        sends,
        left_on="joined_at",
        right_on="mailed_at",
        by="campaign_id",
        direction="forward",
        allow_exact_matches=True,
    )
    return joined.loc[joined["mailed_at"].notna(), list(CANDIDATE_COLUMNS)]


def credits(orders: pd.DataFrame, matches: pd.DataFrame) -> pd.DataFrame:
    """The rows to store for ``matches``: the order's organization, its revenue after
    refunds (never below zero: ``domain.attribution.net_revenue``) and its currency."""
    facts = orders[["order_id", "organization_id", "total_minor", "refunded_minor", "currency"]]
    rows = matches.merge(facts, on="order_id")
    revenue = (rows["total_minor"] - rows["refunded_minor"]).clip(lower=0).astype("int64")
    return rows.assign(revenue_minor=revenue)[list(CREDIT_COLUMNS)]


@dataclass(frozen=True)
class Decisions:
    attributions: pd.DataFrame
    holdout_matches: pd.DataFrame


def decide(inputs: AttributionInputs) -> Decisions:
    """Every examined order's attribution and holdout match (frames of CREDIT_COLUMNS),
    decided independently of each other (``domain.attribution``: holdout recipients)."""
    mailed = inputs.mailed[list(CANDIDATE_COLUMNS)]
    holdouts = holdout_candidates(inputs.holdouts, inputs.mailings)
    return Decisions(
        attributions=credits(inputs.orders, match_orders(inputs.orders, inputs.codes, mailed)),
        holdout_matches=credits(inputs.orders, match_orders(inputs.orders, inputs.codes, holdouts)),
    )


# -- the use case ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionResult:
    """What one run examined and decided; the counts become the asset's metadata."""

    orders_examined: int = 0
    #: Examined orders credited, by method (``offer_code``, ``email``, ``address``).
    attributed: Mapping[str, int] = field(default_factory=dict)
    holdout_matched: int = 0
    #: Revenue credited to the examined orders, in minor units, by currency.
    revenue_minor: Mapping[str, int] = field(default_factory=dict)
    attribution_writes: CreditWrites = field(default_factory=CreditWrites)
    holdout_writes: CreditWrites = field(default_factory=CreditWrites)
    #: The watermark the examined organizations moved to (None when there were none).
    examined_through: datetime | None = None
    groups: int = 0
    #: The whole run, marks included.
    seconds: float = 0.0
    seconds_loading: float = 0.0
    seconds_matching: float = 0.0
    seconds_writing: float = 0.0

    def __add__(self, other: AttributionResult) -> AttributionResult:
        return AttributionResult(
            orders_examined=self.orders_examined + other.orders_examined,
            attributed=_sum(self.attributed, other.attributed),
            holdout_matched=self.holdout_matched + other.holdout_matched,
            revenue_minor=_sum(self.revenue_minor, other.revenue_minor),
            attribution_writes=_add_writes(self.attribution_writes, other.attribution_writes),
            holdout_writes=_add_writes(self.holdout_writes, other.holdout_writes),
            examined_through=other.examined_through or self.examined_through,
            groups=self.groups + other.groups,
            seconds=self.seconds + other.seconds,
            seconds_loading=self.seconds_loading + other.seconds_loading,
            seconds_matching=self.seconds_matching + other.seconds_matching,
            seconds_writing=self.seconds_writing + other.seconds_writing,
        )

    @property
    def code_redemptions(self) -> int:
        return self.attributed.get(MatchType.OFFER_CODE.value, 0)

    @property
    def responder_matches(self) -> int:
        """Credits by email or address (responder matching), apart from code redemptions."""
        return sum(self.attributed.get(m.value, 0) for m in (MatchType.EMAIL, MatchType.ADDRESS))


def _sum(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in sorted({*a, *b})}


def _add_writes(a: CreditWrites, b: CreditWrites) -> CreditWrites:
    return CreditWrites(a.inserted + b.inserted, a.updated + b.updated, a.removed + b.removed)


def organization_groups(pending: Mapping[int, int], max_orders: int) -> list[list[int]]:
    """Organizations in groups of at most ``max_orders`` orders to examine (an organization
    with more is a group of its own), in id order."""
    groups: list[list[int]] = []
    size = 0
    for organization_id in sorted(pending):
        count = pending[organization_id]
        if not groups or size + count > max_orders:
            groups.append([])
            size = 0
        groups[-1].append(organization_id)
        size += count
    return groups


def next_watermark(
    started_at: datetime, oldest_write_in_flight: datetime | None, lag: timedelta
) -> datetime:
    """What a run sets the examined organizations' ``examined_through`` to: the run's start,
    or the start of the oldest transaction writing when the run began if earlier (its
    changes may commit after the run read them), minus ``lag``; taken before the run reads
    anything. A change stamped later than it is examined again by the next run."""
    since = started_at
    if oldest_write_in_flight is not None and oldest_write_in_flight < since:
        since = oldest_write_in_flight
    return since - lag


def attribute_orders(
    sessions: SessionFactory,
    *,
    now: datetime | None = None,
    max_orders: int = MAX_ORDERS_PER_GROUP,
    key_filter_max_orders: int = KEY_FILTER_MAX_ORDERS,
    commit_lag: timedelta = COMMIT_LAG,
    workers: int | None = None,
    organization_ids: Collection[int] | None = None,
) -> AttributionResult:
    """Examine every order waiting for attribution (see ``db.attribution``), credit it, match
    it to holdout recipients, and move the organizations' watermark. ``organization_ids``:
    only these organizations (an on-demand run); ``now``: orders dated
    after it wait; ``key_filter_max_orders``: see ``AttributionGateway.load``;
    ``commit_lag``: see :data:`COMMIT_LAG`; ``workers``: groups worked at once (default
    :data:`GROUP_WORKERS` on PostgreSQL, 1 on SQLite)."""
    started_at = utcnow()
    now = now or started_at
    started = time.perf_counter()
    with sessions() as session:
        gateway = AttributionGateway(session)
        watermark = next_watermark(started_at, gateway.oldest_write_in_flight(), commit_lag)
        pending = gateway.pending_by_organization(now)
        if organization_ids is not None:
            pending = {org: n for org, n in pending.items() if org in set(organization_ids)}
        workers = workers or (1 if gateway.single_writer else GROUP_WORKERS)
    groups = organization_groups(pending, max_orders)
    result = AttributionResult()
    failures: list[tuple[list[int], BaseException]] = []

    def work(group: list[int]) -> AttributionResult:
        return _attribute_group(sessions, group, now, watermark, key_filter_max_orders)

    if workers == 1 or len(groups) <= 1:
        for group in groups:
            try:
                result = result + work(group)
            except Exception as failed:  # noqa: BLE001 - raised below, after the other groups
                failures.append((group, failed))
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attribution") as pool:
            futures = {pool.submit(work, group): group for group in groups}
            for future in as_completed(futures):
                raised = future.exception()
                if raised is None:
                    result = result + future.result()
                else:
                    failures.append((futures[future], raised))
    if failures:
        first_group, error = failures[0]
        error.add_note(
            f"attribution failed for {len(failures)} of {len(groups)} group(s) of "
            f"organizations, the first for organizations {first_group}; the other groups are "
            "written and the failed ones are examined again by the next run"
        )
        raise error
    return replace(result, seconds=time.perf_counter() - started)


def reattribute(sessions: SessionFactory, organization_ids: Sequence[int]) -> int:
    """Have the next run examine every order of these organizations again (their watermark
    goes): what an operator does after changing a campaign's attribution window, so orders
    a longer window now holds are credited. What the run decides as stored is not written
    again. Returns how many of the organizations had a watermark."""
    with sessions() as session:
        return AttributionGateway(session).forget(organization_ids)


def _attribute_group(
    sessions: SessionFactory,
    organization_ids: list[int],
    now: datetime,
    watermark: datetime,
    key_filter: int,
) -> AttributionResult:
    """One group in one transaction: load, decide, write the credits, advance the
    organizations' watermark."""
    with sessions() as session:
        gateway = AttributionGateway(session)
        gateway.lock(organization_ids)
        started = time.perf_counter()
        inputs = gateway.load(organization_ids, now, key_filter_max_orders=key_filter)
        loaded = time.perf_counter()
        decisions = decide(inputs)
        matched = time.perf_counter()
        stamp = utcnow()
        written = gateway.write(decisions.attributions, decisions.holdout_matches, stamp)
        gateway.advance(organization_ids, watermark, now, stamp)
    finished = time.perf_counter()
    attributed = decisions.attributions
    return AttributionResult(
        orders_examined=len(inputs.orders),
        attributed={
            str(k): int(v) for k, v in attributed["match_type"].value_counts().sort_index().items()
        },
        holdout_matched=len(decisions.holdout_matches),
        revenue_minor={
            str(k): int(v)
            for k, v in attributed.groupby("currency")["revenue_minor"].sum().sort_index().items()
        },
        attribution_writes=written.attributions,
        holdout_writes=written.holdout_matches,
        examined_through=watermark,
        groups=1,
        seconds_loading=loaded - started,
        seconds_matching=matched - loaded,
        seconds_writing=finished - matched,
    )

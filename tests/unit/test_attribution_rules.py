"""Attribution rules: the one-order rule (domain) and its vectorized form (services) on
small literal frames, and a property test that keeps the two equal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail_pipeline.domain.attribution import (
    Candidate,
    Match,
    MatchType,
    OrderFacts,
    best_match,
    holdout_mail_date,
    in_window,
    net_revenue,
)
from mail_pipeline.services.attribution import (
    credits,
    holdout_candidates,
    match_orders,
    organization_groups,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


# -- the domain rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ordered_at", "inside"),
    [
        (T0 - US, False),  # before the mail date
        (T0, True),  # the mail date itself is inside
        (T0 + timedelta(days=30) - US, True),  # the last instant of the window
        (T0 + timedelta(days=30), False),  # the end is outside
    ],
)
def test_window_edges(ordered_at: datetime, inside: bool) -> None:
    assert in_window(T0, 30, ordered_at) is inside


def test_net_revenue_is_total_minus_refunds_never_negative() -> None:
    assert net_revenue(5000, 1200) == 3800
    assert net_revenue(5000, 5000) == 0
    assert net_revenue(5000, 6000) == 0
    assert net_revenue(0, 0) == 0


def _candidate(rid: int, **fields: object) -> Candidate:
    values: dict[str, object] = {"campaign_id": 100 + rid, "mailed_at": T0, "window_days": 30}
    values.update(fields)
    return Candidate(recipient_id=rid, **values)  # type: ignore[arg-type]


def test_code_beats_email_beats_address() -> None:
    by_address = _candidate(1, address_key="a1")
    by_email = _candidate(2, email_key="e1")
    by_code = _candidate(3, offer_code="code3")
    order = OrderFacts(
        ordered_at=T0 + timedelta(days=1),
        email_key="e1",
        address_key="a1",
        discount_codes=(" CODE3 ",),
    )
    assert best_match(order, [by_address, by_email, by_code]) == Match(3, 103, MatchType.OFFER_CODE)
    assert best_match(order, [by_address, by_email]) == Match(2, 102, MatchType.EMAIL)
    assert best_match(order, [by_address]) == Match(1, 101, MatchType.ADDRESS)


def test_a_better_method_outside_its_window_gives_way() -> None:
    old_code = _candidate(1, offer_code="C1", mailed_at=T0 - timedelta(days=40))
    email = _candidate(2, email_key="e")
    order = OrderFacts(ordered_at=T0 + timedelta(days=1), email_key="e", discount_codes=("C1",))
    assert best_match(order, [old_code, email]) == Match(2, 102, MatchType.EMAIL)


def test_ties_go_to_the_latest_mailing_then_the_lowest_id() -> None:
    earlier = _candidate(1, email_key="e", mailed_at=T0)
    later = _candidate(5, email_key="e", mailed_at=T0 + timedelta(days=3))
    same_time = _candidate(4, email_key="e", mailed_at=T0 + timedelta(days=3))
    order = OrderFacts(ordered_at=T0 + timedelta(days=5), email_key="e")
    assert best_match(order, [earlier, later, same_time]) == Match(4, 104, MatchType.EMAIL)


def test_cancelled_orders_and_empty_keys_match_nothing() -> None:
    candidate = _candidate(1, email_key="e", offer_code="C")
    assert best_match(OrderFacts(T0, email_key="e", cancelled=True), [candidate]) is None
    assert (
        best_match(
            OrderFacts(T0, email_key="", discount_codes=("", " ")),
            [_candidate(2, email_key="", offer_code=" ")],
        )
        is None
    )


def test_holdout_mail_date_is_the_first_mailing_at_or_after_joining() -> None:
    mailings = [T0 - timedelta(days=60), T0, T0 + timedelta(days=7)]
    assert holdout_mail_date(T0 - timedelta(days=1), mailings) == T0
    assert holdout_mail_date(T0, mailings) == T0
    assert holdout_mail_date(T0 + timedelta(days=8), mailings) is None


# -- the same rules on frames --------------------------------------------------------------


def _orders(*rows: dict[str, object]) -> pd.DataFrame:
    defaults = {
        "organization_id": 1,
        "email_key": None,
        "address_key": None,
        "total_minor": 5000,
        "refunded_minor": 0,
        "currency": "USD",
        "cancelled": False,
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], utc=True)
    return frame


def _candidates(*rows: dict[str, object]) -> pd.DataFrame:
    defaults = {
        "organization_id": 1,
        "email_key": None,
        "address_key": None,
        "offer_code": None,
        "mailed_at": T0,
        "window_days": 30,
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows])
    frame["mailed_at"] = pd.to_datetime(frame["mailed_at"], utc=True)
    return frame


def _codes(*pairs: tuple[int, str]) -> pd.DataFrame:
    return pd.DataFrame({"order_id": [p[0] for p in pairs], "code": [p[1] for p in pairs]}).astype(
        {"order_id": "int64", "code": "str"}
    )


def _matched(frame: pd.DataFrame) -> dict[int, tuple[int, str]]:
    return {int(r.order_id): (int(r.recipient_id), str(r.match_type)) for r in frame.itertuples()}


def test_frames_match_by_method_window_and_organization() -> None:
    day = timedelta(days=1)
    orders = _orders(
        {"order_id": 1, "ordered_at": T0 + day, "email_key": "e2", "address_key": "a3"},
        {"order_id": 2, "ordered_at": T0 + day, "email_key": "e2", "address_key": "a3"},
        {"order_id": 3, "ordered_at": T0 + day, "address_key": "a3"},
        {"order_id": 4, "ordered_at": T0 - US, "email_key": "e2"},
        {"order_id": 5, "ordered_at": T0 + timedelta(days=30), "email_key": "e2"},
        {"order_id": 6, "ordered_at": T0 + day, "email_key": "e2", "organization_id": 2},
        {"order_id": 7, "ordered_at": T0 + day, "email_key": "e2", "cancelled": True},
    )
    candidates = _candidates(
        {"recipient_id": 1, "campaign_id": 10, "offer_code": "ABC"},
        {"recipient_id": 2, "campaign_id": 10, "email_key": "e2"},
        {"recipient_id": 3, "campaign_id": 11, "address_key": "a3"},
    )
    matched = match_orders(orders, _codes((1, " abc "), (1, "OTHER")), candidates)
    assert _matched(matched) == {
        1: (1, "offer_code"),
        2: (2, "email"),
        3: (3, "address"),
    }


def test_frames_break_ties_like_the_rule() -> None:
    orders = _orders({"order_id": 1, "ordered_at": T0 + timedelta(days=5), "email_key": "e"})
    candidates = _candidates(
        {"recipient_id": 7, "campaign_id": 1, "email_key": "e", "mailed_at": T0},
        {"recipient_id": 9, "campaign_id": 2, "email_key": "e", "mailed_at": T0 + timedelta(1)},
        {"recipient_id": 8, "campaign_id": 3, "email_key": "e", "mailed_at": T0 + timedelta(1)},
        # mailed after the order: not a candidate at all
        {"recipient_id": 1, "campaign_id": 4, "email_key": "e", "mailed_at": T0 + timedelta(6)},
    )
    assert _matched(match_orders(orders, _codes(), candidates)) == {1: (8, "email")}


def test_credits_carry_revenue_after_refunds() -> None:
    orders = _orders(
        {"order_id": 1, "ordered_at": T0, "total_minor": 5000, "refunded_minor": 1500},
        {"order_id": 2, "ordered_at": T0, "total_minor": 0},
        {"order_id": 3, "ordered_at": T0, "total_minor": 100, "refunded_minor": 300},
    )
    matches = pd.DataFrame(
        {"order_id": [1, 2, 3], "recipient_id": [1, 1, 1], "campaign_id": [1, 1, 1]}
    ).assign(match_type="email")
    rows = credits(orders, matches).set_index("order_id")
    assert rows["revenue_minor"].to_dict() == {1: 3500, 2: 0, 3: 0}


def test_holdout_candidates_take_their_campaigns_next_mailing() -> None:
    holdouts = pd.DataFrame(
        {
            "recipient_id": [1, 2, 3],
            "organization_id": [1, 1, 1],
            "campaign_id": [10, 10, 11],
            "email_key": ["h1", "h2", "h3"],
            "address_key": [None, None, None],
            "offer_code": [None, None, None],
            "window_days": [30, 30, 30],
            "joined_at": pd.to_datetime(
                [T0 - timedelta(days=1), T0 + timedelta(days=2), T0], utc=True
            ),
        }
    )
    mailed = _candidates(
        {"recipient_id": 20, "campaign_id": 10, "mailed_at": T0},
        {"recipient_id": 21, "campaign_id": 10, "mailed_at": T0 + timedelta(days=9)},
        {"recipient_id": 22, "campaign_id": 12, "mailed_at": T0 + timedelta(days=1)},
    )
    found = holdout_candidates(holdouts, mailed).set_index("recipient_id")["mailed_at"]
    assert found.to_dict() == {
        1: pd.Timestamp(T0),
        2: pd.Timestamp(T0 + timedelta(days=9)),
    }  # campaign 11 has not mailed: recipient 3 is no candidate yet


def test_organization_groups_keep_an_organization_whole() -> None:
    assert organization_groups({3: 5, 1: 4, 2: 2, 4: 20}, 10) == [[1, 2], [3], [4]]
    assert organization_groups({}, 10) == []


# -- the frames agree with the rule, whatever the data ------------------------------------

_keys = st.sampled_from([None, "", "k1", "k2", "k3"])
_codes_st = st.sampled_from([None, "", "C1", "c1 ", "C2", "C3"])
_days = st.integers(min_value=-3, max_value=12)


@st.composite
def _world(
    draw: st.DrawFn,
) -> tuple[list[tuple[int, OrderFacts, int]], list[tuple[int, Candidate]]]:
    n_candidates = draw(st.integers(0, 6))
    candidates = []
    for rid in range(1, n_candidates + 1):
        candidates.append(
            (
                draw(st.sampled_from([1, 2])),
                Candidate(
                    recipient_id=rid,
                    campaign_id=draw(st.sampled_from([10, 11])),
                    mailed_at=T0 + timedelta(days=draw(st.integers(0, 4))),
                    window_days=draw(st.sampled_from([3, 7])),
                    offer_code=draw(_codes_st),
                    email_key=draw(_keys),
                    address_key=draw(_keys),
                ),
            )
        )
    orders = []
    for oid in range(1, draw(st.integers(1, 6)) + 1):
        orders.append(
            (
                oid,
                OrderFacts(
                    ordered_at=T0
                    + timedelta(days=draw(_days), microseconds=draw(st.sampled_from([-1, 0, 1]))),
                    email_key=draw(_keys),
                    address_key=draw(_keys),
                    discount_codes=tuple(draw(st.lists(_codes_st.filter(bool), max_size=2))),
                    cancelled=draw(st.booleans()),
                ),
                draw(st.sampled_from([1, 2])),
            )
        )
    return orders, candidates


@settings(max_examples=150, deadline=None)
@given(_world())
def test_frames_agree_with_the_one_order_rule(
    world: tuple[list[tuple[int, OrderFacts, int]], list[tuple[int, Candidate]]],
) -> None:
    orders, candidates = world
    expected = {}
    for oid, facts, org in orders:
        match = best_match(facts, [c for o, c in candidates if o == org])
        if match is not None:
            expected[oid] = (match.recipient_id, match.match_type.value)
    order_frame = _orders(
        *(
            {
                "order_id": oid,
                "organization_id": org,
                "ordered_at": facts.ordered_at,
                "email_key": facts.email_key,
                "address_key": facts.address_key,
                "cancelled": facts.cancelled,
            }
            for oid, facts, org in orders
        )
    )
    code_frame = _codes(*((oid, code) for oid, facts, _ in orders for code in facts.discount_codes))
    if candidates:
        candidate_frame = _candidates(
            *(
                {
                    "recipient_id": c.recipient_id,
                    "organization_id": org,
                    "campaign_id": c.campaign_id,
                    "email_key": c.email_key,
                    "address_key": c.address_key,
                    "offer_code": c.offer_code,
                    "mailed_at": c.mailed_at,
                    "window_days": c.window_days,
                }
                for org, c in candidates
            )
        )
    else:
        candidate_frame = _candidates({"recipient_id": 0, "organization_id": 99, "campaign_id": 0})
    assert _matched(match_orders(order_frame, code_frame, candidate_frame)) == expected

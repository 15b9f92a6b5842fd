"""What the attribution asset checks verify, read from the database in a few aggregate
queries (``db.attribution``): each returns a :class:`Finding` with the number of credits
breaking the rule, a few order ids (never a customer's data) and a sentence.

- an order is credited at most once: the unique ``order_id`` constraints make it
  structural; the check also catches a table whose constraint went missing;
- a credit's order, recipient and campaign are of its organization, and its campaign is its
  recipient's;
- revenue is never negative;
- an attribution is to a recipient who is mailed, inside the window
  (``sent_at <= ordered_at < sent_at + window``). A run examines such an attribution's order
  again before the check runs, so the check fails only on rows written outside attribution.
  Holdout matches are not judged by a window here: a holdout recipient's mail date is
  derived from its campaign's mailings (``domain.attribution.holdout_mail_date``), not
  stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from mail_pipeline.db.attribution import AttributionGateway, Violations
from mail_pipeline.db.engine import SessionFactory


@dataclass(frozen=True)
class Finding:
    count: int
    order_ids: list[int]
    description: str


def _finding(violations: Violations, ok: str, wrong: str) -> Finding:
    if not violations.count:
        return Finding(0, [], ok)
    return Finding(violations.count, violations.order_ids, f"{violations.count} {wrong}")


def credited_once_within_organization(sessions: SessionFactory) -> Finding:
    with sessions() as session:
        gateway = AttributionGateway(session)
        twice = gateway.orders_credited_twice()
        across = gateway.credits_across_organizations()
    problems = [
        f"{v.count} {what}"
        for v, what in (
            (twice, "orders credited more than once"),
            (across, "credits to a missing order, recipient or campaign, or across organizations"),
        )
        if v.count
    ]
    if not problems:
        return Finding(
            0, [], "every order is credited at most once, to a recipient of its organization"
        )
    ids = sorted({*twice.order_ids, *across.order_ids})[:10]
    return Finding(twice.count + across.count, ids, "; ".join(problems))


def revenue_not_negative(sessions: SessionFactory) -> Finding:
    with sessions() as session:
        found = AttributionGateway(session).negative_revenue()
    return _finding(found, "no credit has negative revenue", "credits with negative revenue")


def attributions_in_window(sessions: SessionFactory) -> Finding:
    with sessions() as session:
        found = AttributionGateway(session).outside_window()
    return _finding(
        found,
        "every attribution is to a mailed recipient, inside its window",
        "attributions to a recipient not mailed or outside the window",
    )

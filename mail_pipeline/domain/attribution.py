"""Attribution: which mailed recipient, if any, an order is credited to.

The rules, in the order they are applied (``services.attribution`` applies them to frames of
orders and recipients at once; :func:`best_match` is the same rule for one order, written
plainly, and a property test keeps the two equal):

- **Who can be credited.** A *mailed* recipient: status Sent or Received with a ``sent_at``
  (:data:`MAILED_STATUSES`), of the order's own organization. A recipient the printer failed
  after accepting (Sent -> Error) is no longer mailed: an order credited to it is examined
  again and goes to another recipient, or to none.
- **Methods, best first** (:data:`MATCH_ORDER`): the order redeemed the recipient's offer
  code (one of its discount codes equals the recipient's ``offer_code``, both compared as
  :func:`~mail_pipeline.domain.orders.normalize_code` makes them), then the same email key,
  then the same address key. An empty or missing key matches nothing. An order is credited
  by the best method that finds a recipient inside its window, whatever the other methods
  would find; ``match_type`` records the method, so code redemptions and responder matching
  (email, address) are reported side by side.
- **The window** (:func:`in_window`): ``sent_at <= ordered_at < sent_at +
  attribution_window_days`` (the campaign's), days of exactly 24 hours in UTC. The mail date
  itself is inside (an order placed the second the postcard was handed over counts); the
  instant the window ends is outside. Every method, offer codes included, is bound by it.
- **Ties** (several recipients by the same method - several of the order's codes, or the
  same person mailed by two campaigns): the recipient mailed most recently before the order
  (the last postcard the customer received), then the lowest recipient id.
- **Orders.** Cancelled orders are never credited (a cancellation after crediting removes
  the credit). Refunded orders are credited with ``revenue = total - refunded``, never below
  zero (:func:`net_revenue`); a fully refunded or zero-total order is still credited, with
  revenue 0: it is a response to the postcard (a free-gift code redeemed is one), and the
  metrics count it as a conversion worth nothing.
- **Holdout recipients** (status Holdout, never mailed) are matched by exactly the same
  methods, window and ties into ``holdout_matches``, the other side of a campaign's lift.
  Their "mail date" (:func:`holdout_mail_date`) is the first ``sent_at`` of a mailed
  recipient of the same campaign at or after the holdout recipient joined the campaign
  (``created_at``): the mailing it would have gone out with. A one-off campaign's holdout
  thus starts with the campaign's mail date; an always-on campaign's holdout starts with
  the first mailing after it entered the segment, not months earlier with the campaign's
  first postcard. Until the campaign mails after it joined, a holdout recipient matches
  nothing. Holdout matching is independent of crediting: an order may be credited to a
  mailed recipient and matched to a holdout recipient (of the same campaign or another),
  because each campaign's mailed and holdout groups must count their conversions the same
  way for the lift to be fair.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mail_pipeline.domain.orders import normalize_code
from mail_pipeline.domain.recipients import RecipientStatus


class MatchType(StrEnum):
    OFFER_CODE = "offer_code"
    EMAIL = "email"
    ADDRESS = "address"


#: The methods, best first: an order is credited by the first one that finds a recipient.
MATCH_ORDER: tuple[MatchType, ...] = (MatchType.OFFER_CODE, MatchType.EMAIL, MatchType.ADDRESS)

#: Recipients whose postcard went out (with a ``sent_at``): the ones orders are credited to.
MAILED_STATUSES = frozenset({RecipientStatus.SENT, RecipientStatus.RECEIVED})


def window_end(mailed_at: datetime, window_days: int) -> datetime:
    """The first instant after the attribution window (it is not inside)."""
    return mailed_at + timedelta(days=window_days)


def in_window(mailed_at: datetime, window_days: int, ordered_at: datetime) -> bool:
    """``mailed_at <= ordered_at < mailed_at + window_days``."""
    return mailed_at <= ordered_at < window_end(mailed_at, window_days)


def net_revenue(total_minor: int, refunded_minor: int) -> int:
    """What an order earned after refunds, never below zero."""
    return max(total_minor - refunded_minor, 0)


def usable_key(key: str | None) -> str | None:
    """A matching key, or None when there is none (missing or empty)."""
    return key if key else None


@dataclass(frozen=True)
class Candidate:
    """A recipient an order may be credited (or, for a holdout, matched) to."""

    recipient_id: int
    campaign_id: int
    #: ``sent_at``; for a holdout recipient, :func:`holdout_mail_date`.
    mailed_at: datetime
    window_days: int
    offer_code: str | None = None
    email_key: str | None = None
    address_key: str | None = None

    def key(self, method: MatchType) -> set[str]:
        if method is MatchType.OFFER_CODE:
            code = normalize_code(self.offer_code) if self.offer_code else ""
            return {code} if code else set()
        value = usable_key(self.email_key if method is MatchType.EMAIL else self.address_key)
        return {value} if value else set()


@dataclass(frozen=True)
class OrderFacts:
    """What attribution reads of an order."""

    ordered_at: datetime
    email_key: str | None = None
    address_key: str | None = None
    discount_codes: tuple[str, ...] = ()
    cancelled: bool = False

    def keys(self, method: MatchType) -> set[str]:
        if method is MatchType.OFFER_CODE:
            return {c for c in (normalize_code(code) for code in self.discount_codes) if c}
        value = usable_key(self.email_key if method is MatchType.EMAIL else self.address_key)
        return {value} if value else set()


@dataclass(frozen=True)
class Match:
    recipient_id: int
    campaign_id: int
    match_type: MatchType


def best_match(order: OrderFacts, candidates: Iterable[Candidate]) -> Match | None:
    """The recipient ``order`` is credited to among ``candidates`` (all of the order's
    organization), by the rules of this module; None if none."""
    if order.cancelled:
        return None
    pool = [c for c in candidates if in_window(c.mailed_at, c.window_days, order.ordered_at)]
    for method in MATCH_ORDER:
        wanted = order.keys(method)
        found = [c for c in pool if wanted & c.key(method)]
        if found:
            best = max(found, key=lambda c: (c.mailed_at, -c.recipient_id))
            return Match(best.recipient_id, best.campaign_id, method)
    return None


def holdout_mail_date(
    joined_at: datetime, campaign_mailings: Sequence[datetime]
) -> datetime | None:
    """A holdout recipient's mail date: the first of its campaign's ``sent_at`` at or after
    it joined the campaign; None while the campaign has not mailed since."""
    later = [sent_at for sent_at in campaign_mailings if sent_at >= joined_at]
    return min(later) if later else None

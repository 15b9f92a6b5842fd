"""Suppressions: people an organization does not mail even though they are in a segment or
an uploaded list. Each is checked at sync (the recipient is decided Skipped, or Blacklisted
for the do-not-mail list) and again right before the printer is asked for a new postcard
(``services.mailing``: the recipient becomes Skipped), because a person may have ordered,
been mailed by another campaign or been put on the list in between. The reason names the
rule.

- **Do-not-mail list**: the organization's (and the global) blocklist, emails and postal
  addresses by their matching keys (``domain.addresses``); importable by CSV through the
  upload pipeline (``services.uploads``, kind ``do_not_mail``).
- **Days between mailings** (``organizations.min_days_between_mailings``): a person mailed
  by any other campaign of the organization (by email or address) in the last N days is not
  mailed again. Without the setting, a person another campaign has mailed is never mailed by
  a second one (the cross-campaign exclusion of ``domain.sync``).
- **Recent purchasers** (``organizations.recent_purchase_days``): a person who placed an
  order that counts (not cancelled) in the last N days is not mailed: they are buying
  already.
- **Where** (``campaigns.allowed_regions``, ``campaigns.allowed_postal_prefixes``): a
  campaign may mail only some states/regions (codes, as the address is stored: "CA", "NY")
  and postal codes starting with some prefixes ("94", "SW1"); an address outside both lists
  (when set) is not mailed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class SuppressionRules:
    min_days_between_mailings: int | None = None
    recent_purchase_days: int | None = None
    allowed_regions: frozenset[str] | None = None
    allowed_postal_prefixes: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        *,
        min_days_between_mailings: int | None,
        recent_purchase_days: int | None,
        allowed_regions: Collection[str] | None,
        allowed_postal_prefixes: Collection[str] | None,
    ) -> SuppressionRules:
        return cls(
            min_days_between_mailings=min_days_between_mailings or None,
            recent_purchase_days=recent_purchase_days or None,
            allowed_regions=(
                frozenset(r.strip().upper() for r in allowed_regions if r.strip())
                if allowed_regions
                else None
            ),
            allowed_postal_prefixes=(
                tuple(_postal(p) for p in allowed_postal_prefixes if p.strip())
                if allowed_postal_prefixes
                else None
            ),
        )

    def mailed_since(self, now: datetime) -> datetime | None:
        """Mailings after this moment by other campaigns suppress a person (None: the rule
        is off)."""
        days = self.min_days_between_mailings
        return now - timedelta(days=days) if days else None

    def ordered_since(self, now: datetime) -> datetime | None:
        days = self.recent_purchase_days
        return now - timedelta(days=days) if days else None


def _postal(code: str) -> str:
    return "".join(code.split()).upper()


def place_problem(
    rules: SuppressionRules, region: str | None, postal_code: str | None
) -> str | None:
    """Why an address is outside the campaign's allowed regions or postal prefixes."""
    if rules.allowed_regions is not None and (region or "").upper() not in rules.allowed_regions:
        allowed = ", ".join(sorted(rules.allowed_regions))
        return f"outside the campaign's regions ({region or 'no region'}; it mails {allowed})"
    prefixes = rules.allowed_postal_prefixes
    if prefixes is not None and not _postal(postal_code or "").startswith(prefixes):
        return (
            f"outside the campaign's postal areas ({postal_code or 'no postal code'}; it mails "
            f"{', '.join(prefixes)})"
        )
    return None


def mailed_problem(rules: SuppressionRules, campaign_name: str, mailed_at: datetime) -> str:
    return (
        f"mailed by campaign {campaign_name!r} on {mailed_at:%Y-%m-%d}: the organization "
        f"mails a person at most once every {rules.min_days_between_mailings} days"
    )


def ordered_problem(rules: SuppressionRules, ordered_at: datetime) -> str:
    return (
        f"ordered on {ordered_at:%Y-%m-%d}: the organization does not mail a buyer for "
        f"{rules.recent_purchase_days} days after an order"
    )


BLOCKED_EMAIL = "email address is on the do-not-mail list"
BLOCKED_ADDRESS = "postal address is on the do-not-mail list"

"""What a recipient sync decides for each profile of a campaign's segment (seed 001 §1).

A :class:`SyncDecider` sees one campaign's sync: the profiles already in the campaign, the
people the organization's *other* campaigns already hold, the blocklist, the holdout
percentage and the send cap. For each profile it returns the state the recipient is in,
with a reason for every state that will not be mailed - nobody is dropped silently:

1. a profile already in this campaign -> nothing (a re-sync is a no-op), except one that
   was rejected at sync (Error with no ``error_from_status``): it is *reopened* and decided
   again from the fresh profile, so data the brand fixed in its CDP is picked up;
2. the same person again (same email or address as a recipient of this campaign) ->
   ``Skipped``, "duplicate of profile ..." (a reopened profile is never its own duplicate);
3. an email or address on the organization's or the global blocklist -> ``Blacklisted``;
4. a person already held by another campaign of the organization -> ``Skipped`` (cross-
   campaign exclusion; recipients that were Skipped or Blacklisted there do not count). With
   the organization's days-between-mailings rule, a person another campaign has already
   mailed is excluded only if that mailing was within those days; and a person who ordered
   within the recent-purchase days is ``Skipped`` (``domain.suppressions``);
5. a profile that cannot be mailed (its data is invalid, its address is not mailable, no
   printer serves its country: :func:`mail_pipeline.domain.profiles.judge_profile`) ->
   ``Error`` with the reason. Rules 2-4 come first because fixing the data would not change
   them; rule 5 comes before the holdout and the cap, so an unmailable profile takes no
   place under the cap, and once fixed it lands in the holdout group its stable hash says;
5b. an address outside the campaign's allowed regions or postal prefixes -> ``Skipped``;
6. in the campaign's holdout group -> ``Holdout`` (a stable hash of campaign and profile, so
   re-syncs and backfills put the same people in the holdout);
7. past the campaign's total send cap -> ``Skipped``;
8. no postal address -> ``AddressEnrichable``; otherwise ``Pending``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.suppressions import (
    SuppressionRules,
    mailed_problem,
    ordered_problem,
    place_problem,
)

S = RecipientStatus

#: A recipient of another campaign in one of these states does not exclude the person.
NON_EXCLUDING_STATES = frozenset({S.SKIPPED, S.BLACKLISTED})
#: Recipients in these states will not be mailed; every other state counts against the cap.
NOT_MAILED_STATES = frozenset({S.SKIPPED, S.BLACKLISTED, S.HOLDOUT, S.ERROR})


@dataclass(frozen=True)
class ProfileFacts:
    profile_id: str
    email_key: str | None
    address_key: str | None
    has_address: bool
    #: Why the profile cannot be mailed (rule 5), or ``None``.
    problem: str | None = None
    #: Where the address is (judged), for the campaign's allowed regions and postal areas.
    region: str | None = None
    postal_code: str | None = None


@dataclass(frozen=True)
class Decision:
    status: RecipientStatus
    reason: str | None = None


def holdout_bucket(campaign_id: int, profile_id: str) -> int:
    """A stable number in [0, 10000) for (campaign, profile)."""
    digest = hashlib.sha256(f"{campaign_id}:{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def in_holdout(campaign_id: int, profile_id: str, percentage: Decimal) -> bool:
    return holdout_bucket(campaign_id, profile_id) < int(percentage * 100)


@dataclass
class SyncDecider:
    campaign_id: int
    holdout_percentage: Decimal = Decimal(0)
    #: Emails and address keys on the organization's blocklist or the global one.
    blocked_emails: frozenset[str] = frozenset()
    blocked_addresses: frozenset[str] = frozenset()
    #: email key / address key -> name of the other campaign that holds the person.
    other_campaign_emails: Mapping[str, str] = field(default_factory=dict)
    other_campaign_addresses: Mapping[str, str] = field(default_factory=dict)
    #: How many more recipients the campaign may mail (None: no cap).
    remaining_cap: int | None = None
    rules: SuppressionRules = field(default_factory=SuppressionRules)
    #: email key / address key -> (campaign name, when) for people other campaigns mailed
    #: within the rules' days, and for people who ordered within theirs.
    recently_mailed: Mapping[str, tuple[str, datetime]] = field(default_factory=dict)
    recent_buyers: Mapping[str, datetime] = field(default_factory=dict)
    _profiles: set[str] = field(default_factory=set)
    _emails: dict[str, str] = field(default_factory=dict)
    _addresses: dict[str, str] = field(default_factory=dict)

    def know_existing(
        self, existing: Iterable[ProfileFacts], *, reopened: Collection[str] = ()
    ) -> None:
        """Register the campaign's current recipients (so re-syncs change nothing). Profiles
        in ``reopened`` (rejected at sync) keep their email and address registered but are
        decided again when the CDP sends them."""
        for facts in existing:
            self._remember(facts)
            if facts.profile_id in reopened:
                self._profiles.discard(facts.profile_id)

    def claim(self, facts: ProfileFacts) -> bool:
        """Record a profile that becomes a recipient outside the rules (a malformed one, in
        Error), so later profiles of the same person are still duplicates; False when the
        campaign already has this profile."""
        if facts.profile_id in self._profiles:
            return False
        self._remember(facts)
        return True

    def decide(self, facts: ProfileFacts) -> Decision | None:
        if facts.profile_id in self._profiles:
            return None
        same_email = self._other_holder(self._emails, facts.email_key, facts.profile_id)
        same_address = self._other_holder(self._addresses, facts.address_key, facts.profile_id)
        self._remember(facts)
        if same_email:
            return Decision(S.SKIPPED, f"duplicate of profile {same_email} (same email)")
        if same_address:
            return Decision(S.SKIPPED, f"duplicate of profile {same_address} (same address)")
        if facts.email_key and facts.email_key in self.blocked_emails:
            return Decision(S.BLACKLISTED, "email address is on the blocklist")
        if facts.address_key and facts.address_key in self.blocked_addresses:
            return Decision(S.BLACKLISTED, "postal address is on the blocklist")
        other = (facts.email_key and self.other_campaign_emails.get(facts.email_key)) or (
            facts.address_key and self.other_campaign_addresses.get(facts.address_key)
        )
        if other:
            return Decision(S.SKIPPED, f"already a recipient of campaign {other!r}")
        suppressed = self._suppressed(facts)
        if suppressed:
            return Decision(S.SKIPPED, suppressed)
        if facts.problem:
            return Decision(S.ERROR, facts.problem)
        if facts.has_address:
            outside = place_problem(self.rules, facts.region, facts.postal_code)
            if outside:
                return Decision(S.SKIPPED, outside)
        if self.holdout_percentage and in_holdout(
            self.campaign_id, facts.profile_id, self.holdout_percentage
        ):
            return Decision(S.HOLDOUT, f"in the campaign's {self.holdout_percentage}% holdout")
        if self.remaining_cap is not None:
            if self.remaining_cap <= 0:
                return Decision(S.SKIPPED, "the campaign's total send cap is reached")
            self.remaining_cap -= 1
        if not facts.has_address:
            return Decision(S.ADDRESS_ENRICHABLE)
        return Decision(S.PENDING)

    def _suppressed(self, facts: ProfileFacts) -> str | None:
        keys = [k for k in (facts.email_key, facts.address_key) if k]
        mailed = [self.recently_mailed[k] for k in keys if k in self.recently_mailed]
        if mailed:
            name, when = max(mailed, key=lambda m: m[1])
            return mailed_problem(self.rules, name, when)
        bought = [self.recent_buyers[k] for k in keys if k in self.recent_buyers]
        if bought:
            return ordered_problem(self.rules, max(bought))
        return None

    @staticmethod
    def _other_holder(known: Mapping[str, str], key: str | None, profile_id: str) -> str | None:
        holder = known.get(key) if key else None
        return holder if holder != profile_id else None

    def _remember(self, facts: ProfileFacts) -> None:
        self._profiles.add(facts.profile_id)
        if facts.email_key:
            self._emails.setdefault(facts.email_key, facts.profile_id)
        if facts.address_key:
            self._addresses.setdefault(facts.address_key, facts.profile_id)

"""The gate before the printer in SQL (rules: ``domain.sending``): what the campaign and
organization say now, daily cap places taken and given back, and the claim filter that
keeps paused and capped campaigns' recipients where they are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import MAILED_STATES, rules_of
from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import (
    BlocklistEntry,
    Campaign,
    Order,
    Organization,
    Recipient,
    SendCapUsage,
)
from mail_pipeline.domain.sending import CAMPAIGN, ORGANIZATION, GateFacts, capped_reason
from mail_pipeline.domain.suppressions import (
    BLOCKED_ADDRESS,
    BLOCKED_EMAIL,
    mailed_problem,
    ordered_problem,
    place_problem,
)

#: Keys per ``IN`` list of a suppression query (a chunk's recipients fit in one).
IN_CHUNK = 500


def _used(scope: str, scope_id: Any, day: date) -> Any:
    return func.coalesce(
        select(SendCapUsage.used)
        .where(
            SendCapUsage.scope == scope, SendCapUsage.scope_id == scope_id, SendCapUsage.day == day
        )
        .scalar_subquery(),
        0,
    )


def sendable(day: date) -> Any:
    """A condition on ``Campaign`` joined to ``Organization``: not paused, and under both
    daily caps for ``day`` (claims of the mailing stage)."""
    return and_(
        Organization.mailing_paused_at.is_(None),
        or_(
            Campaign.daily_send_cap.is_(None),
            _used(CAMPAIGN, Campaign.id, day) < Campaign.daily_send_cap,
        ),
        or_(
            Organization.daily_send_cap.is_(None),
            _used(ORGANIZATION, Organization.id, day) < Organization.daily_send_cap,
        ),
    )


def _asking(
    recipients: Sequence[Recipient], since: Mapping[int, datetime | None]
) -> tuple[list[Recipient], datetime | None]:
    """The recipients a window rule applies to (a window, and a key to match people by),
    and the earliest of their windows (None when there are none)."""
    asking = [
        r for r in recipients if since.get(r.id) is not None and (r.email_key or r.address_key)
    ]
    windows = [w for r in asking if (w := since[r.id]) is not None]
    return asking, min(windows, default=None)


def _same_keys(recipient: Recipient, email_key: str | None, address_key: str | None) -> bool:
    """Whether a row with these keys is the same person as ``recipient`` (a key it has)."""
    return bool(
        (recipient.email_key and email_key == recipient.email_key)
        or (recipient.address_key and address_key == recipient.address_key)
    )


class SendGate:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._loaded: dict[int, tuple[Campaign, Organization]] = {}

    def _owners(self, campaign_id: int) -> tuple[Campaign, Organization]:
        """The campaign and its organization, read once per gate (one transaction)."""
        if campaign_id not in self._loaded:
            campaign, organization = self.session.execute(
                select(Campaign, Organization)
                .join(Organization, Organization.id == Campaign.organization_id)
                .where(Campaign.id == campaign_id)
            ).one()
            self._loaded[campaign_id] = (campaign, organization)
        return self._loaded[campaign_id]

    def suppression(self, recipient: Recipient, now: datetime) -> str | None:
        """Why ``recipient`` must not be mailed now (``domain.suppressions``), or ``None``:
        the do-not-mail list, a mailing by another campaign or an order within the
        organization's days, an address outside the campaign's areas."""
        return self.suppressions([recipient], now).get(recipient.id)

    def suppressions(self, recipients: Sequence[Recipient], now: datetime) -> dict[int, str]:
        """:meth:`suppression` for many recipients at once: ``recipient id -> why`` for those
        that must not be mailed now (the others are absent). One query per rule for all of
        them instead of up to three per recipient; each recipient is judged by its own
        campaign's and organization's rules, in the same order (do-not-mail list, mailed,
        ordered, place). When both of a recipient's keys are on the list, the email wins."""
        found: dict[int, str] = {}
        blocked = self._blocked(recipients)
        for recipient in recipients:
            for kind, key, reason in (
                ("email", recipient.email_key, BLOCKED_EMAIL),
                ("address", recipient.address_key, BLOCKED_ADDRESS),
            ):
                if key and (
                    (recipient.organization_id, kind, key) in blocked
                    or (None, kind, key) in blocked
                ):
                    found[recipient.id] = reason
                    break
        windows = {}
        for recipient in recipients:
            if recipient.id not in found:
                campaign, organization = self._owners(recipient.campaign_id)
                rules = rules_of(campaign, organization)
                windows[recipient.id] = (rules, rules.mailed_since(now), rules.ordered_since(now))
        left = [r for r in recipients if r.id in windows]
        mailed = self._last_mailed(left, {rid: w[1] for rid, w in windows.items()})
        for recipient in left:
            if recipient.id in mailed:
                name, sent_at = mailed[recipient.id]
                found[recipient.id] = mailed_problem(windows[recipient.id][0], name, sent_at)
        left = [r for r in left if r.id not in found]
        ordered = self._last_ordered(left, {rid: w[2] for rid, w in windows.items()})
        for recipient in left:
            rules = windows[recipient.id][0]
            problem = (
                ordered_problem(rules, ordered[recipient.id])
                if recipient.id in ordered
                else place_problem(rules, recipient.region, recipient.postal_code)
            )
            if problem is not None:
                found[recipient.id] = problem
        return found

    def _blocked(self, recipients: Sequence[Recipient]) -> set[tuple[int | None, str, str]]:
        """``(organization or None, kind, value)`` of the do-not-mail entries that name any of
        the recipients' keys, in their organizations or for every organization."""
        keys = {
            "email": sorted({r.email_key for r in recipients if r.email_key}),
            "address": sorted({r.address_key for r in recipients if r.address_key}),
        }
        organizations = sorted({r.organization_id for r in recipients})
        entries: set[tuple[int | None, str, str]] = set()
        for kind, values in keys.items():
            for start in range(0, len(values), IN_CHUNK):
                rows = self.session.execute(
                    select(
                        BlocklistEntry.organization_id, BlocklistEntry.kind, BlocklistEntry.value
                    ).where(
                        or_(
                            BlocklistEntry.organization_id.in_(organizations),
                            BlocklistEntry.organization_id.is_(None),
                        ),
                        BlocklistEntry.kind == kind,
                        BlocklistEntry.value.in_(values[start : start + IN_CHUNK]),
                    )
                )
                entries.update((org, k, v) for org, k, v in rows)
        return entries

    def _last_mailed(
        self, recipients: Sequence[Recipient], since: Mapping[int, datetime | None]
    ) -> dict[int, tuple[str, datetime]]:
        """For each recipient with a mailed window and a key: the campaign name and time of
        the latest mailing to the same person (email or address key) by another recipient of
        its organization within its window."""
        asking, earliest = _asking(recipients, since)
        if earliest is None:
            return {}
        rows = self._people_rows(
            asking,
            select(
                Recipient.id,
                Recipient.organization_id,
                Recipient.email_key,
                Recipient.address_key,
                Recipient.sent_at,
                Campaign.name,
            )
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                Recipient.status.in_(sorted(MAILED_STATES)),
                Recipient.sent_at >= earliest,
            ),
            Recipient,
        )
        latest: dict[int, tuple[str, datetime]] = {}
        for recipient in asking:
            window = since[recipient.id]
            for row in rows:
                if (
                    row.id != recipient.id
                    and row.organization_id == recipient.organization_id
                    and row.sent_at >= window
                    and _same_keys(recipient, row.email_key, row.address_key)
                    and (recipient.id not in latest or row.sent_at > latest[recipient.id][1])
                ):
                    latest[recipient.id] = (row.name, row.sent_at)
        return latest

    def _last_ordered(
        self, recipients: Sequence[Recipient], since: Mapping[int, datetime | None]
    ) -> dict[int, datetime]:
        """For each recipient with an ordered window and a key: the latest order (not
        cancelled) by the same person in its organization within its window."""
        asking, earliest = _asking(recipients, since)
        if earliest is None:
            return {}
        rows = self._people_rows(
            asking,
            select(
                Order.organization_id,
                Order.email_key,
                Order.address_key,
                func.max(Order.ordered_at).label("ordered_at"),
            )
            .where(Order.ordered_at >= earliest, Order.cancelled.is_(False))
            .group_by(Order.organization_id, Order.email_key, Order.address_key),
            Order,
        )
        latest: dict[int, datetime] = {}
        for recipient in asking:
            window = since[recipient.id]
            for row in rows:
                if (
                    row.organization_id == recipient.organization_id
                    and row.ordered_at >= window
                    and _same_keys(recipient, row.email_key, row.address_key)
                    and (recipient.id not in latest or row.ordered_at > latest[recipient.id])
                ):
                    latest[recipient.id] = row.ordered_at
        return latest

    def _people_rows(self, recipients: Sequence[Recipient], query: Any, entity: Any) -> list[Any]:
        """``query`` narrowed to the recipients' organizations and to rows sharing an email
        key or an address key with one of them, run in bounded chunks."""
        rows: list[Any] = []
        for start in range(0, len(recipients), IN_CHUNK):
            part = recipients[start : start + IN_CHUNK]
            emails = sorted({r.email_key for r in part if r.email_key})
            addresses = sorted({r.address_key for r in part if r.address_key})
            people = [
                column.in_(values)
                for column, values in (
                    (entity.email_key, emails),
                    (entity.address_key, addresses),
                )
                if values
            ]
            rows += self.session.execute(
                query.where(
                    entity.organization_id.in_(sorted({r.organization_id for r in part})),
                    or_(*people),
                )
            ).all()
        return rows

    def facts(self, campaign_id: int) -> GateFacts:
        campaign, organization = self._owners(campaign_id)
        return GateFacts(
            campaign_name=campaign.name,
            campaign_status=campaign.status,
            organization_status=organization.status,
            organization_paused=organization.mailing_paused_at is not None,
            organization_paused_reason=organization.mailing_paused_reason,
        )

    def reserve(self, campaign_id: int, day: date) -> str | None:
        """Take one place under the campaign's and the organization's caps for ``day``;
        ``None`` when taken, else why not (nothing taken then)."""
        campaign, organization = self._owners(campaign_id)
        caps = [
            (ORGANIZATION, organization.id, organization.name, organization.daily_send_cap),
            (CAMPAIGN, campaign.id, campaign.name, campaign.daily_send_cap),
        ]
        taken: list[tuple[str, int]] = []
        for scope, scope_id, name, cap in caps:
            if cap is None:
                continue
            if not self._take(scope, scope_id, day, cap):
                for done_scope, done_id in taken:
                    self._give_back(done_scope, done_id, day)
                return capped_reason(scope, name, cap)
            taken.append((scope, scope_id))
        return None

    def release(self, campaign_id: int, day: date) -> None:
        """Give back the places a postcard took (the printer refused it)."""
        organization_id = self.session.scalar(
            select(Campaign.organization_id).where(Campaign.id == campaign_id)
        )
        self._give_back(CAMPAIGN, campaign_id, day)
        if organization_id is not None:
            self._give_back(ORGANIZATION, organization_id, day)

    def used(self, scope: str, scope_id: int, day: date) -> int:
        return int(self.session.scalar(select(_used(scope, scope_id, day))) or 0)

    def _take(self, scope: str, scope_id: int, day: date, cap: int) -> bool:
        self.session.execute(
            dialect_insert(self.session)(SendCapUsage)
            .values(scope=scope, scope_id=scope_id, day=day, used=0)
            .on_conflict_do_nothing(index_elements=["scope", "scope_id", "day"])
        )
        taken = self.session.scalar(
            update(SendCapUsage)
            .where(
                SendCapUsage.scope == scope,
                SendCapUsage.scope_id == scope_id,
                SendCapUsage.day == day,
                SendCapUsage.used < cap,
            )
            .values(used=SendCapUsage.used + 1)
            .returning(SendCapUsage.used)
        )
        return taken is not None

    def _give_back(self, scope: str, scope_id: int, day: date) -> None:
        self.session.execute(
            update(SendCapUsage)
            .where(
                SendCapUsage.scope == scope,
                SendCapUsage.scope_id == scope_id,
                SendCapUsage.day == day,
                SendCapUsage.used > 0,
            )
            .values(used=SendCapUsage.used - 1)
        )

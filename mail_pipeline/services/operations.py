"""What an operator does by hand: list recipients in Error with their reasons, and retry them.

A retry sends a recipient back to the start of the stage that failed (``retry_target``):
proofing errors to Pending, mailing errors to Proofed, sync-time rejections to Pending. It is
safe to retry a mailing error: the mailpiece ledger holds the recipient's print attempts, so
a printer that already has the postcard is found by its idempotency key and nothing is
printed twice. The previous reason is kept in ``status_reason`` with who retried it.

Only a recipient whose data can be mailed is moved - the same judgement as at sync
(:func:`~mail_pipeline.domain.profiles.judge_profile`: a name, an address valid for its
country, a printer route for it, within that printer's limits); its address is written in
the normal form that judgement gives. Every other id gets a sentence saying why it was not
moved ("recipient 41: not moved - US address is missing the state", "not in Error", "no
such recipient"): a person fixes the data (in the CDP, then a re-sync decides the recipient
again) instead of sending it into a stage that would fail it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mail_pipeline.db.campaigns import CampaignGateway
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import Organization, Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.profiles import Destination, ProfileData, judge_profile
from mail_pipeline.domain.recipients import RecipientStatus, retry_target

#: The columns a retry rewrites with the address's normal form.
_ADDRESS_COLUMNS = (
    "address1",
    "address2",
    "city",
    "region",
    "postal_code",
    "country",
    "address_key",
)


@dataclass(frozen=True)
class ErrorRecipient:
    id: int
    campaign_id: int
    failed_in: RecipientStatus | None
    reason: str


def error_recipients(
    sessions: SessionFactory, *, campaign_id: int | None = None, limit: int = 100
) -> list[ErrorRecipient]:
    with sessions() as session:
        rows = RecipientGateway(session).in_status(
            RecipientStatus.ERROR, campaign_id=campaign_id, limit=limit
        )
        return [
            ErrorRecipient(r.id, r.campaign_id, r.error_from_status, r.status_reason or "")
            for r in rows
        ]


@dataclass(frozen=True)
class RetryOutcome:
    recipient_id: int
    #: Where the recipient went, or ``None`` when it was not moved.
    moved_to: RecipientStatus | None = None
    #: Why it was not moved.
    refusal: str | None = None

    def line(self) -> str:
        if self.moved_to is not None:
            return f"recipient {self.recipient_id}: sent back to {self.moved_to}"
        return f"recipient {self.recipient_id}: not moved - {self.refusal}"


@dataclass(frozen=True)
class RetryResult:
    outcomes: tuple[RetryOutcome, ...]

    @property
    def moved(self) -> list[int]:
        return sorted(o.recipient_id for o in self.outcomes if o.moved_to is not None)

    @property
    def not_moved(self) -> dict[int, str]:
        return {o.recipient_id: o.refusal or "" for o in self.outcomes if o.moved_to is None}

    def lines(self) -> list[str]:
        return [o.line() for o in self.outcomes]


def retry_errors(sessions: SessionFactory, recipient_ids: list[int], *, by: str) -> RetryResult:
    """Send the given Error recipients whose data can be mailed back to where their stage
    starts; say for every other id why it stays."""
    outcomes: list[RetryOutcome] = []
    with sessions() as session:
        found = CampaignGateway(session).recipients_with_organizations(recipient_ids)
        gateway = RecipientGateway(session)
        for recipient_id in dict.fromkeys(recipient_ids):
            if recipient_id not in found:
                outcomes.append(RetryOutcome(recipient_id, refusal="no such recipient"))
                continue
            recipient, organization = found[recipient_id]
            outcomes.append(_retry(gateway, recipient, organization, by))
    return RetryResult(tuple(outcomes))


def _retry(
    gateway: RecipientGateway, recipient: Recipient, organization: Organization, by: str
) -> RetryOutcome:
    if recipient.status is not RecipientStatus.ERROR:
        return RetryOutcome(recipient.id, refusal=f"not in Error (it is {recipient.status})")
    address, problem = _mailable_address(recipient, organization)
    if problem is not None:
        return RetryOutcome(recipient.id, refusal=problem)
    target = retry_target(recipient.error_from_status)
    note = f"retried by {by} (was: {recipient.status_reason})"[:2000]
    moved = gateway.transition(
        recipient.id,
        RecipientStatus.ERROR,
        target,
        values={**address, "status_reason": note, "error_from_status": None},
    )
    if not moved:
        return RetryOutcome(recipient.id, refusal="no longer in Error (moved meanwhile)")
    return RetryOutcome(recipient.id, moved_to=target)


def _mailable_address(
    recipient: Recipient, organization: Organization
) -> tuple[Mapping[str, Any], str | None]:
    """The recipient's address in normal form, or why it cannot be mailed."""
    judged = judge_profile(
        ProfileData(
            profile_id=recipient.external_profile_id or f"recipient:{recipient.id}",
            email=recipient.email,
            first_name=recipient.first_name,
            last_name=recipient.last_name,
            address1=recipient.address1,
            address2=recipient.address2,
            city=recipient.city,
            region=recipient.region,
            postal_code=recipient.postal_code,
            country=recipient.country,
            properties=recipient.properties or {},
        ),
        Destination(
            home_country=organization.country,
            printer_preference=organization.printer_preference,
        ),
    )
    if judged.problem is not None:
        return {}, judged.problem
    if not judged.has_address:
        return {}, "has no postal address (street, city and postal code)"
    return {column: judged.values[column] for column in _ADDRESS_COLUMNS}, None

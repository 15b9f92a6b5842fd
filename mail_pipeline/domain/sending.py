"""The gate before the printer: pauses (the kill switch) and daily send caps.

The mailing run asks the gate right before it writes a *new* mailpiece row, i.e. right before
it asks a printer to create a postcard (``services.mailing``); claiming checks the same
pauses and caps, so held-back recipients are not claimed again and again, but a pause set or
a cap reached while a run is mailing takes effect at the run's next recipient.

- **Paused**: the campaign is not Active (a person paused it, or it ended), the organization
  is not active (churned, disabled), or its kill switch is on (``mailing_paused_at``, with a
  reason). Nothing more is printed for it until that changes.
- **Daily caps**: the campaign's ``daily_send_cap`` and the organization's
  ``daily_send_cap`` count the postcards written for a printer per New York day. A
  postcard takes its place under both caps in the transaction that writes its mailpiece
  row, only while both have room, so two runs mailing at once never pass a cap together.
  A place is given back when the printer refuses the postcard (nothing was printed).

A recipient held back goes back to Proofed with the reason in ``status_reason``
(:func:`held_reason`), and is mailed when the pause is lifted or the cap resets at midnight
New York. A resumed attempt (its mailpiece row was written before a crash) is not gated
again: its decision to print was made and recorded with its row, and the printer is asked
about that piece before anything is created.
"""

from __future__ import annotations

from dataclasses import dataclass

from mail_pipeline.domain.campaigns import CampaignStatus, OrganizationStatus

CAMPAIGN = "campaign"
ORGANIZATION = "organization"


@dataclass(frozen=True)
class GateFacts:
    """The campaign's and organization's state as the database says now."""

    campaign_name: str
    campaign_status: CampaignStatus
    organization_status: OrganizationStatus
    organization_paused_reason: str | None = None
    organization_paused: bool = False


def paused_reason(facts: GateFacts) -> str | None:
    """Why nothing of this campaign may be printed now, or ``None``."""
    if facts.organization_paused:
        why = facts.organization_paused_reason or "no reason given"
        return f"held back: the organization's mailing is paused ({why})"
    if facts.organization_status != OrganizationStatus.ACTIVE:
        return f"held back: the organization is {facts.organization_status}"
    if facts.campaign_status != CampaignStatus.ACTIVE:
        return f"held back: campaign {facts.campaign_name!r} is {facts.campaign_status}"
    return None


def capped_reason(scope: str, name: str, cap: int) -> str:
    """Why a recipient waits for a daily cap to reset."""
    return (
        f"held back: {scope} {name!r} reached its daily cap of {cap} postcards "
        "(it resets at midnight New York)"
    )


def held_reason(paused: str | None, capped: str | None) -> str | None:
    return paused or capped

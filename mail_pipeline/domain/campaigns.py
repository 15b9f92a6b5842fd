"""Campaign and organization vocabularies, and the sync-candidacy gate of seed 001 §1."""

from __future__ import annotations

from enum import StrEnum


class CampaignMode(StrEnum):
    AUTOMATED = "automated"
    ONE_OFF = "one_off"


class CampaignStatus(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    PAUSED = "Paused"
    COMPLETED = "Completed"


class Postage(StrEnum):
    FIRST_CLASS = "first_class"
    STANDARD = "standard"


class OrganizationStatus(StrEnum):
    ACTIVE = "active"
    CHURNED = "churned"
    DISABLED = "disabled"


class CsmCadence(StrEnum):
    WEEKLY = "weekly"
    BIWEEKLY = "biweekly"


class IntegrationKind(StrEnum):
    KLAVIYO = "klaviyo"
    OMETRIA = "ometria"
    SHOPIFY = "shopify"


#: Campaign statuses a sync may run in at all.
SYNCABLE_STATUSES = frozenset(
    {CampaignStatus.PENDING, CampaignStatus.ACTIVE, CampaignStatus.PAUSED}
)


def is_sync_candidate(mode: CampaignMode, status: CampaignStatus) -> bool:
    """Seed 001 §1: ``campaign_mode = 'automated' OR (one_off AND status = 'Pending')``,
    within Pending/Active/Paused. Checked at selection and again inside the sync, because
    the campaign may change in between and manual syncs enter the same path."""
    if status not in SYNCABLE_STATUSES:
        return False
    return mode == CampaignMode.AUTOMATED or status == CampaignStatus.PENDING

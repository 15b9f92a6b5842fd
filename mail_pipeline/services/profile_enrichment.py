"""Profile enrichment (every 10 minutes, per organization): the CDP properties an
organization's designs print are fetched for its recipients not yet proofed, so the proof
personalizes with fresh values.

Rules (``domain.profile_enrichment``): recipients in AddressEnrichable or Pending that came
from a CDP profile, in campaigns whose design uses CDP properties, are fetched unless they
were fetched in the last 24 hours. Fetched values replace stored ones; a property the profile
lacks is removed so the design's default prints (proofing records which defaults it used in
``recipients.proof_defaults``); a value that cannot be printed or stored is dropped with a
reason. A profile the CDP does not return keeps its properties; the check is recorded all the
same, so it is asked again after 24 hours, not every 10 minutes.

Work goes page by page: one query for up to 100 due recipients, one CDP request for their
profiles (Klaviyo's limit per request), one executemany UPDATE in its own transaction. The
write is idempotent (a repeat stores the same values), so a run that dies mid-organization
loses nothing but its current page. A campaign with an invalid design is skipped and named.
A CDP failure (after the client's own retries) stops that organization with
:class:`ProfileEnrichmentFailed`, which carries what was done before it; the pages already
written stay written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.organizations import cdp_integrations
from mail_pipeline.db.profile_enrichment import (
    CampaignDesign,
    DueRecipient,
    ProfileEnrichmentGateway,
)
from mail_pipeline.domain.profile_enrichment import (
    design_properties,
    merge_properties,
    refresh_cutoff,
)
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.renderer.models import InvalidDesign, PostcardDesign

log = logging.getLogger(__name__)

#: Recipients read and profiles asked for at once (Klaviyo takes at most 100 ids a request).
PAGE_SIZE = 100
#: Recipients checked per organization and run by default (the next run does the rest).
DEFAULT_LIMIT = 5000
#: Reasons kept in a result (the counts cover every one).
MAX_REASONS = 20


class CdpProfiles(Protocol):
    """Reads profiles' properties from an organization's CDP (a resource provides it)."""

    def profile_properties(
        self, integration: IntegrationRef, profile_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]: ...


@dataclass
class EnrichmentResult:
    organization_id: int
    #: Due recipients looked at.
    checked: int = 0
    #: Of those, how many the CDP returned a profile for.
    fetched: int = 0
    #: Due recipients whose profile the CDP did not return (properties kept).
    not_found: int = 0
    #: Property values set from the CDP, over all recipients.
    properties_set: int = 0
    #: Properties a design uses that the profile lacks (the design's default prints).
    missing: int = 0
    #: Property values refused (not printable or not storable); the stored value was kept.
    dropped: int = 0
    #: Campaigns skipped because their design is invalid.
    invalid_designs: list[int] = field(default_factory=list)
    #: A few "recipient 12: properties.score is NaN; ..." lines (never a value).
    reasons: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "checked": self.checked,
            "fetched": self.fetched,
            "not_found": self.not_found,
            "properties_set": self.properties_set,
            "missing": self.missing,
            "dropped": self.dropped,
            "invalid_designs": list(self.invalid_designs),
        }


class ProfileEnrichmentFailed(Exception):
    """The organization's CDP could not be read; ``result`` says what was done before."""

    def __init__(self, organization_id: int, reason: str, result: EnrichmentResult) -> None:
        self.organization_id = organization_id
        self.reason = reason
        self.result = result
        super().__init__(f"organization {organization_id}: {reason}")


def _wanted(campaigns: Sequence[CampaignDesign]) -> tuple[dict[int, frozenset[str]], list[int]]:
    """The CDP properties each campaign's design prints (campaigns printing none are left
    out), and the campaigns whose design is invalid."""
    wanted: dict[int, frozenset[str]] = {}
    invalid: list[int] = []
    for campaign in campaigns:
        try:
            names = design_properties(PostcardDesign.from_mapping(campaign.design))
        except InvalidDesign:
            invalid.append(campaign.campaign_id)
            continue
        if names:
            wanted[campaign.campaign_id] = names
    return wanted, invalid


def organizations_to_enrich(sessions: SessionFactory, now: datetime) -> list[int]:
    """Active organizations with a Klaviyo integration and due recipients in a campaign whose
    design prints CDP properties, in id order (one query)."""
    with sessions() as session:
        campaigns = ProfileEnrichmentGateway(session).campaigns_due(refresh_cutoff(now))
    wanted, _invalid = _wanted(campaigns)
    return sorted({c.organization_id for c in campaigns if c.campaign_id in wanted})


def enrich_organization(
    sessions: SessionFactory,
    cdp: CdpProfiles,
    organization_id: int,
    now: datetime,
    limit: int = DEFAULT_LIMIT,
) -> EnrichmentResult:
    """Fetch and store the design properties of up to ``limit`` due recipients of one
    organization; :class:`ProfileEnrichmentFailed` when its CDP cannot be read."""
    result = EnrichmentResult(organization_id)
    cutoff = refresh_cutoff(now)
    with sessions() as session:
        campaigns = ProfileEnrichmentGateway(session).campaigns_due(cutoff, organization_id)
        integration = cdp_integrations(session, [organization_id]).get(organization_id)
    wanted, result.invalid_designs = _wanted(campaigns)
    for campaign_id in result.invalid_designs:
        log.warning("campaign %s: design is invalid; its recipients are not enriched", campaign_id)
    if not wanted or integration is None:
        return result
    after_id = 0
    while result.checked < limit:
        with sessions() as session:
            page = ProfileEnrichmentGateway(session).due_page(
                organization_id,
                wanted,
                cutoff,
                after_id=after_id,
                limit=min(PAGE_SIZE, limit - result.checked),
            )
        if not page:
            break
        after_id = page[-1].id
        try:
            fetched = cdp.profile_properties(integration, [r.profile_id for r in page])
        except IntegrationError as exc:
            raise ProfileEnrichmentFailed(
                organization_id, f"the CDP could not be read: {exc}", result
            ) from exc
        updates = [_merge(recipient, fetched, wanted, result) for recipient in page]
        with sessions() as session:
            ProfileEnrichmentGateway(session).record_enrichment(updates, cutoff, now)
        if len(page) < PAGE_SIZE:
            break
    return result


def _merge(
    recipient: DueRecipient,
    fetched: dict[str, dict[str, Any]],
    wanted: dict[int, frozenset[str]],
    result: EnrichmentResult,
) -> tuple[int, dict[str, Any]]:
    result.checked += 1
    profile = fetched.get(recipient.profile_id)
    if profile is None:
        result.not_found += 1
        return recipient.id, recipient.properties
    result.fetched += 1
    merge = merge_properties(recipient.properties, profile, wanted[recipient.campaign_id])
    result.properties_set += len(merge.set)
    result.missing += len(merge.missing)
    result.dropped += len(merge.dropped)
    for reason in merge.dropped.values():
        if len(result.reasons) < MAX_REASONS:
            result.reasons.append(f"recipient {recipient.id}: {reason}")
    return recipient.id, merge.properties

"""Organization lookups the pipeline's runs need."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.models import OrganizationIntegration
from mail_pipeline.domain.campaigns import IntegrationKind


def cdp_integrations(
    session: Session, organization_ids: Iterable[int]
) -> dict[int, IntegrationRef]:
    """Each organization's enabled Klaviyo integration (absent when it has none)."""
    rows = session.scalars(
        select(OrganizationIntegration).where(
            OrganizationIntegration.organization_id.in_(set(organization_ids)),
            OrganizationIntegration.kind == IntegrationKind.KLAVIYO,
            OrganizationIntegration.enabled.is_(True),
        )
    )
    return {
        i.organization_id: IntegrationRef(
            i.organization_id, i.kind, i.secret_ref, dict(i.settings or {})
        )
        for i in rows
    }

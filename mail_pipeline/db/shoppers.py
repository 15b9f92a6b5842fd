"""What the sandbox shopper reads (local and test only): organizations with an order source,
and their recipients who were mailed or held out - the people whose orders make the demo's
attribution true. Read-only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.models import Organization, OrganizationIntegration, Recipient
from mail_pipeline.domain.campaigns import IntegrationKind, OrganizationStatus
from mail_pipeline.domain.recipients import RecipientStatus

MAILED = (RecipientStatus.SENT, RecipientStatus.RECEIVED)


@dataclass(frozen=True)
class ShoppingOrganization:
    organization_id: int
    #: ISO alpha-2: where the brand sells (its orders' currency).
    country: str
    integrations: tuple[IntegrationRef, ...]


@dataclass(frozen=True)
class Prospect:
    """A recipient who may buy: mailed (``since`` = the mail date) or held out (``since`` =
    when the sync held it out)."""

    recipient_id: int
    organization_id: int
    holdout: bool
    since: datetime
    email: str | None
    address1: str | None
    address2: str | None
    city: str | None
    region: str | None
    postal_code: str | None
    country: str | None
    offer_code: str | None


class ShopperGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def organizations(self, kinds: Iterable[IntegrationKind]) -> list[ShoppingOrganization]:
        """Active organizations with an enabled integration of ``kinds``, in id order."""
        rows = self.session.execute(
            select(Organization.id, Organization.country, OrganizationIntegration)
            .join(
                OrganizationIntegration, OrganizationIntegration.organization_id == Organization.id
            )
            .where(
                Organization.status == OrganizationStatus.ACTIVE,
                OrganizationIntegration.enabled.is_(True),
                OrganizationIntegration.kind.in_(list(kinds)),
            )
            .order_by(Organization.id, OrganizationIntegration.kind)
        )
        found: dict[int, ShoppingOrganization] = {}
        for organization_id, country, integration in rows:
            ref = IntegrationRef(
                integration.organization_id,
                integration.kind,
                integration.secret_ref,
                dict(integration.settings or {}),
            )
            known = found.get(organization_id)
            found[organization_id] = ShoppingOrganization(
                organization_id,
                country,
                (*(known.integrations if known else ()), ref),
            )
        return list(found.values())

    def prospects(self, organization_id: int, since: datetime | None) -> list[Prospect]:
        """The organization's mailed recipients (mailed at ``since`` or later) and held-out
        ones (held out at ``since`` or later), in id order; ``since`` None: all of them."""
        mailed = and_(Recipient.status.in_(MAILED), Recipient.sent_at.is_not(None))
        held = Recipient.status == RecipientStatus.HOLDOUT
        if since is not None:
            mailed = and_(mailed, Recipient.sent_at >= since)
            held = and_(held, Recipient.status_changed_at >= since)
        rows = self.session.execute(
            select(
                Recipient.id,
                Recipient.status,
                Recipient.sent_at,
                Recipient.status_changed_at,
                Recipient.email,
                Recipient.address1,
                Recipient.address2,
                Recipient.city,
                Recipient.region,
                Recipient.postal_code,
                Recipient.country,
                Recipient.offer_code,
            )
            .where(Recipient.organization_id == organization_id, or_(mailed, held))
            .order_by(Recipient.id)
        )
        prospects = []
        for row in rows:
            holdout = row.status == RecipientStatus.HOLDOUT
            prospects.append(
                Prospect(
                    recipient_id=row.id,
                    organization_id=organization_id,
                    holdout=holdout,
                    since=row.status_changed_at if holdout else row.sent_at,
                    email=row.email,
                    address1=row.address1,
                    address2=row.address2,
                    city=row.city,
                    region=row.region,
                    postal_code=row.postal_code,
                    country=row.country,
                    offer_code=row.offer_code,
                )
            )
        return prospects

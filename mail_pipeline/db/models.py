"""The application's tables, as typed SQLAlchemy 2 models.

Names follow the business (organization, campaign, recipient, mailpiece); enums are stored
as their readable values (``'Pending'``, ``'first_class'``) with CHECK constraints, so the
same rows read the same on SQLite and PostgreSQL. Every table has ``created_at``; rows that
change have ``updated_at``. Hot queries and their indexes are listed on each model.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from mail_pipeline.db.types import BigId, Json, UTCDateTime, enum_type
from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    CsmCadence,
    IntegrationKind,
    OrganizationStatus,
    Postage,
)
from mail_pipeline.domain.claims import ClaimStage
from mail_pipeline.domain.environments import Environment
from mail_pipeline.domain.fields import (
    ADDRESS_KEY_MAX,
    ADDRESS_LINE_MAX,
    CITY_MAX,
    COUNTRY_MAX,
    EMAIL_KEY_MAX,
    EMAIL_MAX,
    EXTERNAL_ORDER_ID_MAX,
    EXTERNAL_PROFILE_ID_MAX,
    NAME_MAX,
    OFFER_CODE_MAX,
    POSTAL_CODE_MAX,
    REGION_MAX,
    SOURCE_MAX,
)
from mail_pipeline.domain.ledger import SideEffectStatus
from mail_pipeline.domain.mailpieces import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_PRINTER_NAME_LENGTH,
    MAX_PROVIDER_EVENT_ID_LENGTH,
    MAX_PROVIDER_PIECE_ID_LENGTH,
    MailpieceStatus,
)
from mail_pipeline.domain.manual_sync import ManualSyncStatus
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.secrets import validate_secret_ref

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Organization(Timestamped, Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[OrganizationStatus] = mapped_column(
        enum_type(OrganizationStatus, "organization_status"), default=OrganizationStatus.ACTIVE
    )
    churned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: ISO 3166 alpha-2: where the brand is (its return address, reporting). The printer
    #: route follows each *recipient's* country (``domain.routing``), not this one.
    country: Mapped[str] = mapped_column(String(2))
    #: Overrides the country's default printer ("lob", "stannp", "intelliprint").
    printer_preference: Mapped[str | None] = mapped_column(String(32))
    csm_cadence: Mapped[CsmCadence] = mapped_column(
        enum_type(CsmCadence, "csm_cadence"), default=CsmCadence.WEEKLY
    )
    csm_cadence_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64))
    #: Trusted organizations' uploaded recipient lists commit without review.
    auto_commit_uploads: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The sender printed on postcards: {name, line1, line2, city, region, postal_code, country}.
    return_address: Mapped[dict[str, Any] | None] = mapped_column(Json)
    timezone: Mapped[str] = mapped_column(String(64), default="America/New_York")
    #: The kill switch: set, nothing of the organization is printed (``domain.sending``);
    #: the mailing run checks it right before each printer call.
    mailing_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mailing_paused_reason: Mapped[str | None] = mapped_column(Text)
    #: Postcards a day across all of its campaigns (New York days; None: no cap).
    daily_send_cap: Mapped[int | None] = mapped_column(Integer)
    #: Suppressions (``domain.suppressions``): days between two postcards to one person
    #: across its campaigns, and days after an order during which a buyer is not mailed.
    min_days_between_mailings: Mapped[int | None] = mapped_column(Integer)
    recent_purchase_days: Mapped[int | None] = mapped_column(Integer)

    campaigns: Mapped[list[Campaign]] = relationship(back_populates="organization")
    integrations: Mapped[list[OrganizationIntegration]] = relationship(
        back_populates="organization"
    )


class OrganizationIntegration(Timestamped, Base):
    """A connected CDP or store. ``secret_ref`` names where the credential lives (an
    environment variable or a secrets-manager ARN); the credential itself is never stored."""

    __tablename__ = "organization_integrations"
    __table_args__ = (UniqueConstraint("organization_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    kind: Mapped[IntegrationKind] = mapped_column(enum_type(IntegrationKind, "integration_kind"))
    secret_ref: Mapped[str] = mapped_column(String(200))
    #: Non-secret settings: shop domain, placed-order metric id, ...
    settings: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    organization: Mapped[Organization] = relationship(back_populates="integrations")

    @validates("secret_ref")
    def _check_secret_ref(self, _key: str, value: str) -> str:
        return validate_secret_ref(value)


class Campaign(Timestamped, Base):
    """Hot query: sync candidates by (status, campaign_mode) per organization."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("holdout_percentage >= 0 AND holdout_percentage <= 100", name="holdout"),
        CheckConstraint("attribution_window_days > 0", name="attribution_window"),
        Index(None, "organization_id", "status"),
        Index(None, "status", "campaign_mode"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    campaign_mode: Mapped[CampaignMode] = mapped_column(enum_type(CampaignMode, "campaign_mode"))
    status: Mapped[CampaignStatus] = mapped_column(
        enum_type(CampaignStatus, "campaign_status"), default=CampaignStatus.PENDING
    )
    #: The CDP segment whose profiles become recipients; a one_off may have none (CSV upload).
    provider_segment_id: Mapped[str | None] = mapped_column(String(128))
    #: The postcard design: template, headline, body, colors, offer code, back message.
    design: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    postage: Mapped[Postage] = mapped_column(
        enum_type(Postage, "postage"), default=Postage.FIRST_CLASS
    )
    #: First-class becomes standard this many days after the campaign starts (None: never).
    postage_downgrade_after_days: Mapped[int | None] = mapped_column(Integer)
    postage_downgraded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_date: Mapped[date | None] = mapped_column(Date)
    #: Scheduled campaigns complete once this date has passed.
    mail_date: Mapped[date | None] = mapped_column(Date)
    holdout_percentage: Mapped[Decimal] = mapped_column(Numeric(5, 2), default=Decimal(0))
    attribution_window_days: Mapped[int] = mapped_column(Integer, default=30)
    daily_send_cap: Mapped[int | None] = mapped_column(Integer)
    total_send_cap: Mapped[int | None] = mapped_column(Integer)
    #: Only these states/regions (codes, e.g. ["CA", "OR"]) and postal code prefixes are
    #: mailed (None: anywhere the printers serve).
    allowed_regions: Mapped[list[str] | None] = mapped_column(Json)
    allowed_postal_prefixes: Mapped[list[str] | None] = mapped_column(Json)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why it was completed (``domain.lifecycle``: the rule, or a person's note).
    completed_reason: Mapped[str | None] = mapped_column(Text)
    #: When it became Active (the lifecycle's start, or a person); the postage downgrade
    #: counts from the start date, else from this day.
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    organization: Mapped[Organization] = relationship(back_populates="campaigns")


class Recipient(Timestamped, Base):
    """A profile that entered a campaign's segment. Hot queries:

    - claim a batch: ``WHERE status = ? [AND organization_id = ?] ORDER BY id`` -> (status,
      organization_id, id) and (status, id);
    - per-campaign counts and campaign completion: (status, campaign_id);
    - stale claims: (status, claimed_at); a run's own batch: (batch_id);
    - cross-campaign exclusion, blocklist and attribution: (organization_id, email_key) and
      (organization_id, address_key).
    """

    __tablename__ = "recipients"
    __table_args__ = (
        UniqueConstraint("campaign_id", "external_profile_id"),
        Index("ix_recipients_claim", "status", "id"),
        Index("ix_recipients_claim_org", "status", "organization_id", "id"),
        Index("ix_recipients_status_campaign", "status", "campaign_id"),
        Index("ix_recipients_stale", "status", "claimed_at"),
        Index("ix_recipients_batch", "batch_id"),
        Index("ix_recipients_org_email", "organization_id", "email_key"),
        Index("ix_recipients_org_address", "organization_id", "address_key"),
        UniqueConstraint("organization_id", "offer_code"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    status: Mapped[RecipientStatus] = mapped_column(enum_type(RecipientStatus, "recipient_status"))
    #: Why the recipient is in Error, Skipped, Holdout or Blacklisted: a sentence for a person.
    status_reason: Mapped[str | None] = mapped_column(Text)
    #: The state it failed in, so an operator retry knows where to resume.
    error_from_status: Mapped[RecipientStatus | None] = mapped_column(
        enum_type(RecipientStatus, "recipient_error_from_status")
    )
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: "cdp" for segment syncs, "upload" for CSV lists.
    source: Mapped[str] = mapped_column(String(SOURCE_MAX), default="cdp")
    #: Sizes from ``domain.fields``, where the sync checks every value against them.
    external_profile_id: Mapped[str | None] = mapped_column(String(EXTERNAL_PROFILE_ID_MAX))
    email: Mapped[str | None] = mapped_column(String(EMAIL_MAX))
    email_key: Mapped[str | None] = mapped_column(String(EMAIL_KEY_MAX))
    first_name: Mapped[str | None] = mapped_column(String(NAME_MAX))
    last_name: Mapped[str | None] = mapped_column(String(NAME_MAX))
    address1: Mapped[str | None] = mapped_column(String(ADDRESS_LINE_MAX))
    address2: Mapped[str | None] = mapped_column(String(ADDRESS_LINE_MAX))
    city: Mapped[str | None] = mapped_column(String(CITY_MAX))
    region: Mapped[str | None] = mapped_column(String(REGION_MAX))
    postal_code: Mapped[str | None] = mapped_column(String(POSTAL_CODE_MAX))
    country: Mapped[str | None] = mapped_column(String(COUNTRY_MAX))
    address_key: Mapped[str | None] = mapped_column(String(ADDRESS_KEY_MAX))
    #: Extra CDP properties used for personalization.
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    #: The claim: which batch holds the recipient, since when, and which run took it.
    batch_id: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by_run: Mapped[str | None] = mapped_column(String(64))
    #: How many times a stage took this recipient (a poison recipient shows a high count).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    proof_front_url: Mapped[str | None] = mapped_column(Text)
    proof_back_url: Mapped[str | None] = mapped_column(Text)
    proof_image_ids: Mapped[list[str] | None] = mapped_column(Json)
    proof_renderer: Mapped[str | None] = mapped_column(String(32))
    proofed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The recipient's own offer code, printed on the postcard (unique per organization):
    #: an order redeeming it is attributed to this recipient first.
    offer_code: Mapped[str | None] = mapped_column(String(OFFER_CODE_MAX))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the CDP properties the organization's designs use were last fetched
    #: (``services.profile_enrichment``), and the placeholders the proof filled from the
    #: design's defaults because the profile had no value.
    profile_enriched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    proof_defaults: Mapped[list[str] | None] = mapped_column(Json)


class Mailpiece(Timestamped, Base):
    """One print attempt of a recipient's postcard. The row (with its idempotency key) is
    written *before* the printer is asked. A recipient has one attempt unless the printer
    failed or cancelled an accepted piece and an operator retried it: ``(recipient_id,
    attempt)`` is unique, and each attempt has its own idempotency key."""

    __tablename__ = "mailpieces"
    __table_args__ = (
        UniqueConstraint("printer", "provider_piece_id"),
        UniqueConstraint("recipient_id", "attempt"),
        Index(None, "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("recipients.id"))
    #: 1 for the first print; a retry after the printer failed an accepted piece adds one.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    printer: Mapped[str] = mapped_column(String(MAX_PRINTER_NAME_LENGTH))
    idempotency_key: Mapped[str] = mapped_column(String(MAX_IDEMPOTENCY_KEY_LENGTH), unique=True)
    provider_piece_id: Mapped[str | None] = mapped_column(String(MAX_PROVIDER_PIECE_ID_LENGTH))
    status: Mapped[MailpieceStatus] = mapped_column(
        enum_type(MailpieceStatus, "mailpiece_status"), default=MailpieceStatus.REQUESTED
    )
    postage: Mapped[Postage] = mapped_column(enum_type(Postage, "mailpiece_postage"))
    cost_minor: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    expected_delivery_date: Mapped[date | None] = mapped_column(Date)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MailpieceEvent(Base):
    """A status report from a printer; (printer, provider_event_id) is unique, so a
    redelivered webhook is recorded once."""

    __tablename__ = "mailpiece_events"
    __table_args__ = (UniqueConstraint("printer", "provider_event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mailpiece_id: Mapped[int] = mapped_column(ForeignKey("mailpieces.id"), index=True)
    printer: Mapped[str] = mapped_column(String(MAX_PRINTER_NAME_LENGTH))
    provider_event_id: Mapped[str] = mapped_column(String(MAX_PROVIDER_EVENT_ID_LENGTH))
    status: Mapped[MailpieceStatus] = mapped_column(
        enum_type(MailpieceStatus, "mailpiece_event_status")
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Unbounded in SQL; the status consumer stores at most ``MAX_EVENT_DETAIL_LENGTH``.
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SideEffect(Base):
    """The ledger of paid or visible external calls made for a recipient (print, billing
    meter event, CDP event, image deletion): the deterministic idempotency key is stored
    before the call and the row is marked done after it, so a resumed run repeats only what
    did not finish, with the same key."""

    __tablename__ = "side_effects"
    __table_args__ = (UniqueConstraint("recipient_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("recipients.id"))
    #: A ``domain.ledger.SideEffectKind`` (suffixed with the print attempt where it repeats
    #: per attempt: ``domain.ledger.ledger_kind``).
    kind: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    #: A ``domain.ledger.SideEffectStatus``.
    status: Mapped[str] = mapped_column(String(16), default=SideEffectStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BlocklistEntry(Base):
    """Do-not-mail entries. ``organization_id`` NULL means every organization."""

    __tablename__ = "blocklist_entries"
    __table_args__ = (
        UniqueConstraint("organization_id", "kind", "value"),
        CheckConstraint("kind IN ('email', 'address')", name="kind"),
        Index(None, "kind", "value"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"))
    #: "email" (an email key) or "address" (an address key); see ``domain.addresses``.
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Order(Base):
    """An order synced from Klaviyo, Ometria or Shopify, upserted on (organization, source,
    external id). Only normalized matching keys are kept (email key, address key, the
    discount codes), never the customer's raw email or address. Hot queries: an
    organization's orders changed since attribution's watermark (``updated_at``), daily
    aggregation by ``ordered_at``, and one person's recent orders (the recent-purchaser
    suppression, by email key or address key)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("organization_id", "source", "external_order_id"),
        CheckConstraint("total_minor >= 0", name="total"),
        CheckConstraint("refunded_minor >= 0", name="refunded"),
        Index(None, "organization_id", "updated_at"),
        Index(None, "ordered_at"),
        Index(None, "organization_id", "email_key"),
        Index(None, "organization_id", "address_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    source: Mapped[IntegrationKind] = mapped_column(enum_type(IntegrationKind, "order_source"))
    external_order_id: Mapped[str] = mapped_column(String(EXTERNAL_ORDER_ID_MAX))
    email_key: Mapped[str | None] = mapped_column(String(EMAIL_KEY_MAX))
    address_key: Mapped[str | None] = mapped_column(String(ADDRESS_KEY_MAX))
    #: Discount codes the order redeemed, normalized (upper case, trimmed).
    discount_codes: Mapped[list[str]] = mapped_column(Json, default=list)
    total_minor: Mapped[int] = mapped_column(BigId)
    #: How much of the total was refunded (an order refunded in full has refunded = total).
    refunded_minor: Mapped[int] = mapped_column(BigId, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    ordered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: When the source last changed the order (a refund, a cancellation), as it says.
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OrderSyncState(Base):
    """Where each organization's order sync stands, per source: the watermark the next sync
    reads from (minus the safety overlap), and how the last attempt ended."""

    __tablename__ = "order_sync_state"

    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    source: Mapped[IntegrationKind] = mapped_column(
        enum_type(IntegrationKind, "order_sync_source"), primary_key=True
    )
    #: The latest order time (or update time) seen; None before the first sync.
    watermark: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Why the last attempt failed (None after a success).
    last_error: Mapped[str | None] = mapped_column(Text)
    orders_synced: Mapped[int] = mapped_column(BigId, default=0)


class OfferCode(Base):
    """A pool of offer codes an organization uploaded (optionally for one campaign); a code is
    given to at most one recipient, at proofing."""

    __tablename__ = "offer_codes"
    __table_args__ = (
        UniqueConstraint("organization_id", "code"),
        Index(None, "organization_id", "campaign_id", "recipient_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    #: Only this campaign's recipients draw it (None: any campaign of the organization).
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    code: Mapped[str] = mapped_column(String(OFFER_CODE_MAX))
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("recipients.id"), unique=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Attribution(Base):
    """An order credited to the mailed recipient whose postcard caused it; an order is
    credited once, by the first method that matches (``match_type``: offer code, email,
    address)."""

    __tablename__ = "attributions"
    __table_args__ = (
        CheckConstraint("match_type IN ('offer_code', 'email', 'address')", name="match_type"),
        Index(None, "campaign_id", "attributed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: Derived rows, rebuilt from orders and recipients by attribution, with no foreign keys:
    #: the asset check ``credited_once_in_own_organization`` holds every reference (the order, the
    #: recipient, and the copies of the recipient's campaign and organization, kept for the
    #: daily aggregations) - a constraint trigger per inserted row would take three times
    #: as long as the writes of a backfill's credits themselves (docs/benchmarks.md).
    order_id: Mapped[int] = mapped_column(BigId, unique=True)
    recipient_id: Mapped[int] = mapped_column(BigId, index=True)
    campaign_id: Mapped[int] = mapped_column(BigId)
    organization_id: Mapped[int] = mapped_column(BigId)
    match_type: Mapped[str] = mapped_column(String(16))
    revenue_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    attributed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HoldoutMatch(Base):
    """An order matched, by the same rules, to a holdout recipient (who was never mailed):
    the other side of a campaign's lift. An order matches at most one holdout recipient."""

    __tablename__ = "holdout_matches"
    __table_args__ = (
        CheckConstraint("match_type IN ('offer_code', 'email', 'address')", name="match_type"),
        Index(None, "campaign_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: Derived rows, rebuilt from orders and recipients by attribution, with no foreign keys:
    #: the asset check ``credited_once_in_own_organization`` holds every reference (the order, the
    #: recipient, and the copies of the recipient's campaign and organization, kept for the
    #: daily aggregations) - a constraint trigger per inserted row would take three times
    #: as long as the writes of a backfill's credits themselves (docs/benchmarks.md).
    order_id: Mapped[int] = mapped_column(BigId, unique=True)
    recipient_id: Mapped[int] = mapped_column(BigId, index=True)
    campaign_id: Mapped[int] = mapped_column(BigId)
    organization_id: Mapped[int] = mapped_column(BigId)
    match_type: Mapped[str] = mapped_column(String(16))
    revenue_minor: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    matched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EnrichmentBatch(Timestamped, Base):
    """One address-enrichment batch (``services.address_enrichment``); its recipients carry
    ``batch_id``. ``status``: claimed -> submitted -> completed | failed | timed_out."""

    __tablename__ = "enrichment_batches"
    __table_args__ = (Index(None, "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    batch_id: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(32), default="faraday")
    external_id: Mapped[str | None] = mapped_column(String(128))
    #: submitted -> running -> completed | failed
    status: Mapped[str] = mapped_column(String(16), default="submitted")
    recipient_count: Mapped[int] = mapped_column(Integer, default=0)
    matched_count: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A batch still running at this time is given up and its recipients returned.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Recipients answered from the cache, not matched, and matched to an address the
    #: sync's rules refused.
    cached_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unmatched_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    refused_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class EnrichmentCacheEntry(Base):
    """A remembered enrichment answer (match or no match), kept 90 days."""

    __tablename__ = "enrichment_cache"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lookup_key: Mapped[str] = mapped_column(String(200), unique=True)
    matched: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Audit(Base):
    """An organization audit requested over SQS; ``source_message_id`` dedupes redelivery."""

    __tablename__ = "audits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    source_message_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    findings: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Report(Base):
    """A generated report (weekly, BFCM daily, ...); one per org, kind and period."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("organization_id", "kind", "period_start"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    kind: Mapped[str] = mapped_column(String(32))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="generated")
    content: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The delivery: where the email went, the provider and its message id, and how it ended.
    sent_to: Mapped[list[str] | None] = mapped_column(Json)
    provider: Mapped[str | None] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(256), index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_reason: Mapped[str | None] = mapped_column(Text)


class ReportEmailEvent(Base):
    """An email event (SES notification) applied to a report, once: ``event_id`` is the
    notification's id, so a redelivered message changes nothing."""

    __tablename__ = "report_email_events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(256))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    detail: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ManualSyncTrigger(Base):
    """A person's "sync this campaign now" request, picked up by a 1-minute sensor."""

    __tablename__ = "manual_sync_triggers"
    __table_args__ = (Index(None, "status", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    requested_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    #: pending -> running -> completed | failed (``ManualSyncStatus``; stored as its value)
    status: Mapped[str] = mapped_column(String(16), default=ManualSyncStatus.PENDING.value)
    run_id: Mapped[str | None] = mapped_column(String(64))
    synced_count: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The run asked for it: 1, then one more each time a run was lost before it finished
    #: (``domain.manual_sync.MAX_ATTEMPTS``).
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class CampaignSyncLock(Base):
    """The per-campaign sync lock shared by scheduled and manual syncs: a lease with a
    fencing token, so a holder whose lease expired cannot write after a new holder took it."""

    __tablename__ = "campaign_sync_locks"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    token: Mapped[int] = mapped_column(Integer, default=1)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AppEnvironment(Base):
    """The kind of environment this database serves (one row). The first migration run
    stamps it with the migrating process's environment; a process of another kind refuses
    the database (see ``db.environment``), so a laptop never drives production data."""

    __tablename__ = "app_environment"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    environment: Mapped[Environment] = mapped_column(enum_type(Environment, "app_environment"))
    #: Who stamped it: host and command, for the person reading a refusal.
    stamped_by: Mapped[str] = mapped_column(String(200))
    stamped_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BatchLease(Base):
    """The lease on a claimed batch (see ``domain.claims``). Created with the claim (no
    holder, a short expiry: its run should start soon), taken by the run that processes the
    batch (``holder`` = that run: the fencing token its writes are guarded by, through
    ``recipients.claimed_by_run``) and renewed while it works; recovery returns the batch of
    an expired lease, whatever Dagster says about the run."""

    __tablename__ = "batch_leases"
    __table_args__ = (Index(None, "expires_at"),)

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    stage: Mapped[ClaimStage] = mapped_column(enum_type(ClaimStage, "claim_stage"))
    #: The run holding the batch; NULL while the batch waits for its run.
    holder: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: How many times a run took this batch (a resumed batch shows more than one).
    takes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# --- Daily metrics and campaign results (migration 0005) -------------------------------------
#
# Derived tables: each is rebuilt from the base tables above by the metrics assets (a day's
# rows are replaced as a whole), so they carry no history of their own. Days are New York
# calendar days (``domain.metrics.day_of``). The daily tables have no foreign keys: their ids
# come from rows that have them (and campaigns are never deleted), and a year of days is
# written in one COPY, which checking two keys per row made twice as slow.

#: Recipients whose status changed since a moment: the recipients a day's metrics must look
#: at one by one (every status move stamps ``status_changed_at``).
Index("ix_recipients_status_changed_at", Recipient.status_changed_at)
#: Postcards the printers accepted per day (postcards mailed and spend).
Index("ix_mailpieces_accepted_at", Mailpiece.accepted_at)
#: Returned postcards per day (by the time the printer last reported on them).
Index("ix_mailpieces_status_last_event_at", Mailpiece.status, Mailpiece.last_event_at)


class DailyOrderMetrics(Base):
    """One New York day's orders of an organization in one currency, credited to one
    campaign (``campaign_id`` NULL: credited to none). The rows of a day add up to all the
    organization's orders of that day; a day's rows are replaced together.

    ``orders`` and the revenue columns leave cancelled orders out (``cancelled_orders``
    counts them); ``revenue_minor`` = ``gross_minor`` - ``refunded_minor``
    (``domain.metrics.net_revenue_minor``). The ``*_orders`` / ``*_revenue_minor`` pairs split
    a campaign's orders by the attribution's method (offer-code redemptions, then responder
    matching by email and by address); ``holdout_*`` count the day's orders matched to this
    campaign's holdout recipients (an order can be credited to one campaign and matched to
    another's holdout)."""

    __tablename__ = "daily_order_metrics"
    __table_args__ = (Index(None, "day", "organization_id"), Index(None, "campaign_id", "day"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    organization_id: Mapped[int] = mapped_column(BigId)
    campaign_id: Mapped[int | None] = mapped_column(BigId)
    currency: Mapped[str] = mapped_column(String(3))
    orders: Mapped[int] = mapped_column(Integer)
    cancelled_orders: Mapped[int] = mapped_column(Integer)
    gross_minor: Mapped[int] = mapped_column(BigId)
    refunded_minor: Mapped[int] = mapped_column(BigId)
    revenue_minor: Mapped[int] = mapped_column(BigId)
    offer_code_orders: Mapped[int] = mapped_column(Integer)
    offer_code_revenue_minor: Mapped[int] = mapped_column(BigId)
    email_orders: Mapped[int] = mapped_column(Integer)
    email_revenue_minor: Mapped[int] = mapped_column(BigId)
    address_orders: Mapped[int] = mapped_column(Integer)
    address_revenue_minor: Mapped[int] = mapped_column(BigId)
    holdout_orders: Mapped[int] = mapped_column(Integer)
    holdout_revenue_minor: Mapped[int] = mapped_column(BigId)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DailyRecipientMetrics(Base):
    """One New York day of a campaign's recipients: what happened that day (created,
    proofed, mailed = ``sent_at``, delivered = ``received_at``, returned = pieces whose
    printer reported them returned, by ``last_event_at``; errored = recipients in Error now
    that moved there that day), the postcards the printers accepted that day (all print
    attempts; ``unpriced_postcards`` of them without a price), and how many recipients were in
    each status at the end of the day (``status_*``, rebuilt by ``domain.metrics.status_at``;
    ``recipients`` is their sum)."""

    __tablename__ = "daily_recipient_metrics"
    __table_args__ = (Index(None, "organization_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigId)
    created: Mapped[int] = mapped_column(Integer)
    proofed: Mapped[int] = mapped_column(Integer)
    mailed: Mapped[int] = mapped_column(Integer)
    delivered: Mapped[int] = mapped_column(Integer)
    returned: Mapped[int] = mapped_column(Integer)
    errored: Mapped[int] = mapped_column(Integer)
    postcards_mailed: Mapped[int] = mapped_column(Integer)
    unpriced_postcards: Mapped[int] = mapped_column(Integer)
    recipients: Mapped[int] = mapped_column(Integer)
    status_address_enrichable: Mapped[int] = mapped_column(Integer)
    status_address_enriching: Mapped[int] = mapped_column(Integer)
    status_pending: Mapped[int] = mapped_column(Integer)
    status_proofing_staged: Mapped[int] = mapped_column(Integer)
    status_proofing: Mapped[int] = mapped_column(Integer)
    status_proofed: Mapped[int] = mapped_column(Integer)
    status_sending_staged: Mapped[int] = mapped_column(Integer)
    status_sending: Mapped[int] = mapped_column(Integer)
    status_sent: Mapped[int] = mapped_column(Integer)
    status_received: Mapped[int] = mapped_column(Integer)
    status_skipped: Mapped[int] = mapped_column(Integer)
    status_holdout: Mapped[int] = mapped_column(Integer)
    status_blacklisted: Mapped[int] = mapped_column(Integer)
    status_error: Mapped[int] = mapped_column(Integer)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DailySpend(Base):
    """What the printers charged for one New York day of a campaign's postcards, per
    currency: the ``cost_minor`` of every piece accepted that day (reprints included)."""

    __tablename__ = "daily_spend"
    __table_args__ = (Index(None, "organization_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigId)
    postcards: Mapped[int] = mapped_column(Integer)
    spend_minor: Mapped[int] = mapped_column(BigId)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignResult(Base):
    """A campaign's results as of ``computed_at``: its mailed and holdout groups, their
    conversion rates and the lift between them with its 95% interval (none when
    ``verdict`` is too few to tell or no holdout; ``verdict_reason`` says why), spend, CPA
    and ROAS. Money figures are in ``currency`` when spend and attributed revenue are in one
    currency; otherwise ``currency`` is NULL, CPA and ROAS are not given, and the
    ``*_by_currency`` maps hold the amounts."""

    __tablename__ = "campaign_results"
    __table_args__ = (Index(None, "organization_id"),)

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    mailed_recipients: Mapped[int] = mapped_column(Integer)
    mailed_converted: Mapped[int] = mapped_column(Integer)
    mailed_rate: Mapped[float | None] = mapped_column(Double)
    holdout_recipients: Mapped[int] = mapped_column(Integer)
    holdout_converted: Mapped[int] = mapped_column(Integer)
    holdout_rate: Mapped[float | None] = mapped_column(Double)
    lift: Mapped[float | None] = mapped_column(Double)
    lift_low: Mapped[float | None] = mapped_column(Double)
    lift_high: Mapped[float | None] = mapped_column(Double)
    verdict: Mapped[str] = mapped_column(String(32))
    verdict_reason: Mapped[str | None] = mapped_column(Text)
    postcards_mailed: Mapped[int] = mapped_column(Integer)
    attributed_orders: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3))
    spend_minor: Mapped[int | None] = mapped_column(BigId)
    attributed_revenue_minor: Mapped[int | None] = mapped_column(BigId)
    cpa_minor: Mapped[float | None] = mapped_column(Double)
    roas: Mapped[float | None] = mapped_column(Double)
    spend_by_currency: Mapped[dict[str, int]] = mapped_column(Json, default=dict)
    revenue_by_currency: Mapped[dict[str, int]] = mapped_column(Json, default=dict)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AttributionState(Base):
    """Where attribution stands for one organization (``db.attribution``): every order change
    stamped (``orders.updated_at``) at or before ``examined_through`` has been examined, for
    orders dated at or before ``ordered_through`` (the ``now`` of the last run that examined
    the organization; orders dated after it waited and are examined once their date passes).
    Written in the transaction that writes the organization's credits."""

    __tablename__ = "attribution_state"

    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    examined_through: Mapped[datetime] = mapped_column(UTCDateTime)
    ordered_through: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NightlyStepRun(Base):
    """One nightly step done for one New York night (``domain.lifecycle.NightlyStep``): the
    row is written in the transaction that does the step's work, so a step is done once per
    night whichever run (its own schedule's, a later one catching up, a manual launch) gets
    to it first; the others find the row and skip."""

    __tablename__ = "nightly_step_runs"
    __table_args__ = (UniqueConstraint("night", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    night: Mapped[date] = mapped_column(Date)
    step: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    #: What the step changed: counts and the first lines of its report.
    summary: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunFailure(Base):
    """A failed Dagster run as the run-failure sensor recorded it (``services.alerts``): who
    was affected (organization, stage) and whether people were told. ``run_id`` is unique,
    so a run seen again is recorded once; ``notified_at`` is set only after a notification
    covering it was sent."""

    __tablename__ = "run_failures"
    __table_args__ = (
        Index(None, "notified_at", "failed_at"),
        Index(None, "organization_id", "stage"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), unique=True)
    job: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str | None] = mapped_column(String(64))
    #: From the run's organization tag; no foreign key (a tag is the run's say-so).
    organization_id: Mapped[int | None] = mapped_column(BigId)
    #: One redacted line (``domain.alerts.summarize_error``).
    error: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SendCapUsage(Base):
    """Postcards reserved against a daily cap: one row per (campaign or organization, New
    York day), incremented in the transaction that writes a new mailpiece row, only while
    under the cap (``db.sending``)."""

    __tablename__ = "send_cap_usage"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class UploadBatch(Base):
    """An uploaded CSV list (``services.uploads``): recipients for a one-off campaign, or
    do-not-mail entries for an organization. Committed or rejected as a whole; the per-row
    report is kept for the uploader. A batch awaiting approval is committed by launching
    ``upload_approval_job`` with its id (the file is read again, and must be unchanged)."""

    __tablename__ = "upload_batches"
    __table_args__ = (
        CheckConstraint("status IN ('awaiting_approval', 'committed', 'rejected')", name="status"),
        CheckConstraint("kind IN ('recipients', 'do_not_mail')", name="kind"),
        UniqueConstraint("source", "sha256"),
        Index(None, "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    kind: Mapped[str] = mapped_column(String(16))
    #: The file's name below the upload store's root (``juniper-trail/12/vip.csv``) and its
    #: SHA-256: one batch per file content and place, however often the sensor sees it.
    source: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_accepted: Mapped[int] = mapped_column(Integer, default=0)
    rows_skipped: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    #: Why the whole batch was rejected, in a sentence.
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    #: The per-row report (CSV) and its summary (Markdown).
    report_csv: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReportingCampaignDay(Base):
    """The brand's dashboard: one New York day of a campaign in one currency
    (``domain.reporting``: mailed, delivered and returned on the day's first currency only;
    ``XXX`` for a day with postcards and no money). Rewritten by ``services.reporting_sync``
    for an organization's last days at a time; no foreign keys, as the daily metrics it
    copies."""

    __tablename__ = "reporting_campaign_days"
    __table_args__ = (
        UniqueConstraint("campaign_id", "day", "currency"),
        Index(None, "organization_id", "day"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigId)
    campaign_id: Mapped[int] = mapped_column(BigId)
    day: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    mailed: Mapped[int] = mapped_column(Integer)
    delivered: Mapped[int] = mapped_column(Integer)
    returned: Mapped[int] = mapped_column(Integer)
    orders: Mapped[int] = mapped_column(Integer)
    revenue_minor: Mapped[int] = mapped_column(BigId)
    spend_minor: Mapped[int] = mapped_column(BigId)
    cpa_minor: Mapped[float | None] = mapped_column(Double)
    roas: Mapped[float | None] = mapped_column(Double)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReportingCampaign(Base):
    """The brand's dashboard: one campaign's totals (every day of it) and its lift, as of
    ``synced_at``. Money is in ``currency``; NULL (and no CPA, ROAS or money) when the
    campaign's spend and revenue span several currencies."""

    __tablename__ = "reporting_campaigns"
    __table_args__ = (Index(None, "organization_id"),)

    campaign_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigId)
    currency: Mapped[str | None] = mapped_column(String(3))
    mailed: Mapped[int] = mapped_column(Integer)
    delivered: Mapped[int] = mapped_column(Integer)
    returned: Mapped[int] = mapped_column(Integer)
    orders: Mapped[int] = mapped_column(Integer)
    revenue_minor: Mapped[int | None] = mapped_column(BigId)
    spend_minor: Mapped[int | None] = mapped_column(BigId)
    cpa_minor: Mapped[float | None] = mapped_column(Double)
    roas: Mapped[float | None] = mapped_column(Double)
    lift: Mapped[float | None] = mapped_column(Double)
    lift_low: Mapped[float | None] = mapped_column(Double)
    lift_high: Mapped[float | None] = mapped_column(Double)
    #: ``domain.metrics.Verdict``; NULL until the campaign's results are first computed.
    verdict: Mapped[str | None] = mapped_column(String(32))
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReportingSync(Base):
    """How an organization's reporting store stands: the last sync attempted, its outcome
    (``ok``, or ``failed`` with the reason), the rows it wrote, and when a sync last
    succeeded (``last_synced_at``: NULL until one has)."""

    __tablename__ = "reporting_syncs"
    __table_args__ = (CheckConstraint("status IN ('ok', 'failed')", name="status"),)

    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)


class SharedRateLimit(Base):
    """A vendor rate limit shared by every process on this database (``db.ratelimit``): the
    next free call slot of one limit key, as epoch seconds on the database's clock, and that
    clock's reading when the row was last written (a later reading below it means the clock
    went backwards). The key is the vendor and a short hash of the API key, never the key."""

    __tablename__ = "shared_rate_limits"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_slot_at: Mapped[float] = mapped_column(Double)
    clock_at: Mapped[float] = mapped_column(Double)

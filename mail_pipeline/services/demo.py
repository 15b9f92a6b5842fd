"""Demo data for the embedded default: two brands, their campaigns, their CDP segments, and
their order sources (the US brand on Shopify with Klaviyo placed-order events, the UK brand
on Ometria; ``DEMO_INTEGRATIONS``).

``seed_demo`` is idempotent: organizations are found by slug, campaigns by name, blocklist
entries by value, and each sandbox segment is replaced whole, so running it twice leaves the
same data. Profiles are generated deterministically (a fixed seed) and include the awkward
cases the pipeline must handle: profiles without an address (-> AddressEnrichable), blocklisted
emails (-> Blacklisted), the same person twice in one segment (deduped), and people in two
campaigns of one brand (cross-campaign exclusion).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from mail_pipeline.db.demo import DemoGateway
from mail_pipeline.db.manual_sync import ManualSyncTriggers
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.addresses import email_key
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind, Postage
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, profile_resource
from mail_pipeline.integrations.sandbox.store import SandboxStore

FIRST_NAMES = [
    "Ava",
    "Liam",
    "Maya",
    "Noah",
    "Zoe",
    "Ethan",
    "Iris",
    "Owen",
    "Nora",
    "Caleb",
    "Ruby",
    "Felix",
    "Hazel",
    "Jonah",
    "Ivy",
    "Theo",
    "Clara",
    "Miles",
    "Elsie",
    "Arlo",
]
LAST_NAMES = [
    "Rivera",
    "Chen",
    "Okafor",
    "Schmidt",
    "Patel",
    "Nguyen",
    "Haddad",
    "Kowalski",
    "Murphy",
    "Tanaka",
    "Silva",
    "Johansson",
    "Bennett",
    "Moreau",
    "Fischer",
    "Ali",
]
US_PLACES = [
    ("Portland", "OR", "97205"),
    ("Austin", "TX", "78701"),
    ("Denver", "CO", "80202"),
    ("Brooklyn", "NY", "11201"),
    ("Asheville", "NC", "28801"),
    ("Madison", "WI", "53703"),
    ("Boise", "ID", "83702"),
    ("Burlington", "VT", "05401"),
]
UK_PLACES = [
    ("London", "SW1A 2AA"),
    ("Manchester", "M1 1AE"),
    ("Bristol", "BS1 4DJ"),
    ("Leeds", "LS1 4AP"),
    ("Edinburgh", "EH1 1YZ"),
    ("Cardiff", "CF10 1EP"),
    ("York", "YO1 7HH"),
    ("Bath", "BA1 1LZ"),
]
US_STREETS = ["Maple Ave", "Oak St", "Cedar Ln", "Pine St", "Elm Dr", "Willow Way"]
UK_STREETS = ["High Street", "Station Road", "Church Lane", "Mill Road", "Park Avenue"]


@dataclass(frozen=True)
class SegmentPlan:
    segment_id: str
    size: int
    without_address: int
    blocklisted: int
    duplicated: int
    #: (segment id, count): this many profiles also belong to another segment of the brand.
    overlap_with: tuple[str, int] | None = None
    #: Profiles the pipeline must refuse with a reason (unknown country, address too long).
    unmailable: int = 0


@dataclass(frozen=True)
class CampaignPlan:
    name: str
    mode: CampaignMode
    status: CampaignStatus
    segment: SegmentPlan | None
    holdout: Decimal = Decimal(0)
    postage: Postage = Postage.FIRST_CLASS
    downgrade_after_days: int | None = None


@dataclass(frozen=True)
class BrandPlan:
    slug: str
    name: str
    country: str
    campaigns: tuple[CampaignPlan, ...]
    design: dict[str, Any] = field(default_factory=dict)
    #: Its uploaded lists commit without review (``organizations.auto_commit_uploads``).
    trusted: bool = False


def _design(
    brand: str,
    headline: str,
    code_prefix: str,
    background: str,
    accent: str,
    size: str,
    shop_url: str,
) -> dict[str, Any]:
    """A brand's postcard: every recipient's own offer code starts with ``code_prefix``, and
    its QR code opens the shop's discount link for it."""
    return {
        "template": "classic",
        "brand_name": brand,
        "headline": headline,
        "body": "We saved something for you. Bring this card back and it's yours.",
        "offer_code_prefix": code_prefix,
        "shop_url": shop_url,
        "background_color": background,
        "accent_color": accent,
        "back_message": "Thanks for being part of our story.",
        "size": size,
    }


US_BRAND = BrandPlan(
    slug="juniper-trail",
    name="Juniper Trail Outfitters",
    country="US",
    trusted=True,
    design=_design(
        "Juniper Trail Outfitters",
        "{first_name}, the trail misses you",
        "TRAIL",
        "#1F3B2D",
        "#E9B44C",
        "4x6",
        "https://shop.juniper-trail.example",
    ),
    campaigns=(
        CampaignPlan(
            "Win-back automation",
            CampaignMode.AUTOMATED,
            CampaignStatus.ACTIVE,
            SegmentPlan("SEG-JT-WINBACK", 120, 10, 5, 6, unmailable=3),
            holdout=Decimal(10),
            downgrade_after_days=30,
        ),
        CampaignPlan(
            "Spring launch",
            CampaignMode.ONE_OFF,
            CampaignStatus.PENDING,
            SegmentPlan("SEG-JT-SPRING", 60, 4, 2, 2, ("SEG-JT-WINBACK", 15)),
        ),
        CampaignPlan("VIP list upload", CampaignMode.ONE_OFF, CampaignStatus.PENDING, None),
    ),
)
UK_BRAND = BrandPlan(
    slug="bramble-hearth",
    name="Bramble & Hearth",
    country="GB",
    design=_design(
        "Bramble & Hearth",
        "{first_name}, the kettle's on",
        "HEARTH",
        "#5B2333",
        "#F7F4F3",
        "A6",
        "https://bramble-and-hearth.example",
    ),
    campaigns=(
        CampaignPlan(
            "Lapsed customers",
            CampaignMode.AUTOMATED,
            CampaignStatus.ACTIVE,
            SegmentPlan("SEG-BH-LAPSED", 100, 8, 4, 5),
            holdout=Decimal(5),
        ),
        CampaignPlan(
            "Summer sale",
            CampaignMode.ONE_OFF,
            CampaignStatus.PENDING,
            SegmentPlan("SEG-BH-SUMMER", 40, 3, 1, 2, ("SEG-BH-LAPSED", 10)),
        ),
    ),
)
DEMO_BRANDS = (US_BRAND, UK_BRAND)


#: Each demo brand's integrations and their settings: the US brand sells on Shopify and its
#: Klaviyo records the placed orders too; the UK brand's orders are in Ometria, its Klaviyo
#: is its CDP only. Locally the sandbox resources stand in for all of them, whatever secret
#: the references name.
DEMO_INTEGRATIONS: dict[str, tuple[tuple[IntegrationKind, dict[str, Any]], ...]] = {
    US_BRAND.slug: (
        (IntegrationKind.KLAVIYO, {"placed_order_metric": "Placed Order"}),
        (IntegrationKind.SHOPIFY, {"shop": "juniper-trail-outfitters"}),
    ),
    UK_BRAND.slug: (
        (IntegrationKind.KLAVIYO, {}),
        (IntegrationKind.OMETRIA, {}),
    ),
}
SECRET_NAMES = {
    IntegrationKind.KLAVIYO: "KLAVIYO_API_KEY",
    IntegrationKind.SHOPIFY: "SHOPIFY_ACCESS_TOKEN",
    IntegrationKind.OMETRIA: "OMETRIA_API_KEY",
}


@dataclass
class DemoSummary:
    organizations: int = 0
    campaigns: int = 0
    profiles: int = 0
    blocklist_entries: int = 0
    segments: dict[str, int] = field(default_factory=dict)


def _address(rng: random.Random, country: str) -> dict[str, Any]:
    number = rng.randint(1, 999)
    if country == "US":
        city, region, zip_code = rng.choice(US_PLACES)
        return {
            "address1": f"{number} {rng.choice(US_STREETS)}",
            "address2": None,
            "city": city,
            "region": region,
            "zip": zip_code,
            "country": rng.choice(["United States", "US", "USA"]),
        }
    city, postcode = rng.choice(UK_PLACES)
    return {
        "address1": f"{number} {rng.choice(UK_STREETS)}",
        "address2": None,
        "city": city,
        "region": None,
        "zip": postcode,
        "country": rng.choice(["United Kingdom", "GB"]),
    }


def _profiles(
    brand: BrandPlan,
    plan: SegmentPlan,
    rng: random.Random,
    existing: dict[str, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """The segment's JSON:API profile resources, and the emails to put on the blocklist."""
    profiles: list[dict[str, Any]] = []
    if plan.overlap_with:
        other, count = plan.overlap_with
        profiles.extend(existing[other][:count])
    index = 0
    while len(profiles) < plan.size:
        index += 1
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{first}.{last}.{plan.segment_id[-4:]}{index}@example.com".lower()
        profiles.append(
            profile_resource(
                profile_id=f"01{brand.slug[:2].upper()}{plan.segment_id[-6:]}{index:05d}",
                email=email,
                first_name=first,
                last_name=last,
                location=_address(rng, brand.country),
                properties={
                    "favorite_category": rng.choice(["boots", "tents", "tea", "candles"]),
                    "lifetime_orders": rng.randint(1, 12),
                },
            )
        )
    fresh = profiles[plan.overlap_with[1] if plan.overlap_with else 0 :]
    for profile in fresh[: plan.without_address]:
        profile["attributes"]["location"] = {"country": None, "address1": None}
    blocklisted = [p["attributes"]["email"] for p in fresh[len(fresh) - plan.blocklisted :]]
    for profile in fresh[len(fresh) // 3 : len(fresh) // 3 + plan.unmailable]:
        _make_unmailable(profile, rng)
    # The same person twice: a second CDP profile with the same email and address.
    for i, original in enumerate(
        fresh[plan.without_address : plan.without_address + plan.duplicated]
    ):
        copy = {**original, "id": f"{original['id']}D{i}", "attributes": {**original["attributes"]}}
        profiles.append(copy)
    return profiles, blocklisted


def _make_unmailable(profile: dict[str, Any], rng: random.Random) -> None:
    """Alternately: a country no printer serves, or a street line too long for Lob."""
    location = profile["attributes"]["location"]
    if rng.random() < 0.5:
        location["country"] = "Atlantis"
    else:
        location["address1"] = "Apartment 12B, The Old Granary Building, 1450 Long Meadow Road"


def request_demo_syncs(session: Session) -> int:
    """Ask for a sync of every demo campaign with a segment now, instead of waiting for the
    15-minute schedule (what a person would do with 'sync now'). Skips campaigns that already
    have recipients or an open (pending or running) request."""
    demo = DemoGateway(session)
    triggers = ManualSyncTriggers(session)
    recipients = RecipientGateway(session)
    requested = 0
    for brand in DEMO_BRANDS:
        for campaign_id in demo.campaigns_with_segment(brand.slug):
            if triggers.has_open_request(campaign_id):
                continue
            if recipients.counts_by_status(campaign_id=campaign_id):
                continue
            triggers.request(campaign_id, "demo", "first sync of the demo data")
            requested += 1
    return requested


def seed_demo(session: Session, store: SandboxStore, *, today: date | None = None) -> DemoSummary:
    """Create or refresh the demo brands, their campaigns (starting three days before
    ``today``), blocklists and sandbox segments; idempotent."""
    today = today or datetime.now(UTC).date()
    rng = random.Random(20261123)
    cdp = KlaviyoSandboxData(store)
    demo = DemoGateway(session)
    summary = DemoSummary()
    for brand in DEMO_BRANDS:
        org_id = demo.upsert_organization(
            brand.slug,
            name=brand.name,
            country=brand.country,
            stripe_customer_id=f"cus_demo_{brand.slug.replace('-', '_')}",
            return_address=_return_address(brand),
            trusted=brand.trusted,
        )
        summary.organizations += 1
        for kind, settings in DEMO_INTEGRATIONS[brand.slug]:
            demo.ensure_integration(
                org_id,
                kind,
                secret_ref=f"{SECRET_NAMES[kind]}_{brand.slug.split('-')[0].upper()}",
                settings=settings,
            )
        segments: dict[str, list[dict[str, Any]]] = {}
        for plan in brand.campaigns:
            demo.upsert_campaign(
                org_id,
                plan.name,
                mode=plan.mode,
                status=plan.status,
                segment_id=plan.segment.segment_id if plan.segment else None,
                design=brand.design,
                holdout_percentage=plan.holdout,
                postage=plan.postage,
                downgrade_after_days=plan.downgrade_after_days,
                default_start_date=today - timedelta(days=3),
            )
            summary.campaigns += 1
            if plan.segment is None:
                continue
            profiles, blocklisted = _profiles(brand, plan.segment, rng, segments)
            segments[plan.segment.segment_id] = profiles
            cdp.put_segment_profiles(plan.segment.segment_id, profiles)
            summary.profiles += len(profiles)
            summary.segments[plan.segment.segment_id] = len(profiles)
            for email in blocklisted:
                key = email_key(email)
                if key and demo.block_email(org_id, key, "asked not to be mailed (demo)"):
                    summary.blocklist_entries += 1
    return summary


def _return_address(brand: BrandPlan) -> dict[str, Any]:
    if brand.country == "US":
        return {
            "name": brand.name,
            "line1": "400 Alder St",
            "city": "Portland",
            "region": "OR",
            "postal_code": "97204",
            "country": "US",
        }
    return {
        "name": brand.name,
        "line1": "12 Wharf Street",
        "city": "Bristol",
        "postal_code": "BS1 4RN",
        "country": "GB",
    }


#: The demo's uploaded list for "VIP list upload": an Excel export (BOM, semicolons, CRLF)
#: with a duplicate and a row that cannot be mailed, so the uploader's report has both.
VIP_LIST_ROWS = (
    ("Alma Reyes", "alma.reyes@example.com", "118 Cedar Lane", "Bend", "OR", "97701"),
    ("Theo Marsh", "theo.marsh@example.com", "42 Willow Road", "Boulder", "CO", "80302"),
    ("Priya Nair", "priya.nair@example.com", "9 Aspen Court, Apt 4", "Missoula", "MT", "59801"),
    ("Sam O'Neil", "sam.oneil@example.com", "700 Ridge Ave", "Asheville", "NC", "28801"),
    ("Alma Reyes", "ALMA.REYES@example.com", "118 Cedar Ln", "Bend", "OR", "97701"),
)
VIP_LIST_NAME = "vip-list.csv"


def demo_upload(session: Session) -> tuple[str, bytes] | None:
    """The demo's recipient list for the US brand's "VIP list upload" campaign: its name
    below the upload folder (``<slug>/<campaign id>/vip-list.csv``) and its bytes; ``None``
    before the demo is seeded."""
    campaign_id = DemoGateway(session).campaign_id(US_BRAND.slug, "VIP list upload")
    if campaign_id is None:
        return None
    lines = ["Full Name;E-Mail;Street Address;Town;State;Zip Code;Tier"]
    lines += [";".join((*row, "gold")) for row in VIP_LIST_ROWS]
    return f"{US_BRAND.slug}/{campaign_id}/{VIP_LIST_NAME}", (
        "\ufeff" + "\r\n".join(lines) + "\r\n"
    ).encode()

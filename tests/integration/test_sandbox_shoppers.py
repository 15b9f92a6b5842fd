"""The sandbox shopper: deterministic, idempotent, incremental, and every kind of order the
attribution must meet - read back through the real order clients from the sandboxes. Also
the demo brands' order-source integrations. SQLite, and PostgreSQL when
MAIL_PIPELINE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Campaign, Organization, OrganizationIntegration, Recipient
from mail_pipeline.domain.addresses import address_key, email_key
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
from mail_pipeline.domain.orders import SourceOrder
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.orders.factory import order_client
from mail_pipeline.integrations.orders.sandbox import (
    OrderSandboxData,
    ShopifySandbox,
    sandbox_account,
    sandbox_transport,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.services.demo import seed_demo
from mail_pipeline.services.sandbox_shoppers import ShopperPlan, go_shopping

K = IntegrationKind
S = RecipientStatus
#: Mailed long enough ago that every order, refund and cancellation is due by now.
MAILED_AT = datetime.now(UTC).replace(microsecond=0) - timedelta(days=60)
EVERY_KIND = {
    "email",
    "address",
    "offer_code",
    "holdout",
    "stranger",
    "zero_total",
    "cancelled",
    "refunded",
}


def _organization(
    db_url: str, country: str, integrations: list[tuple[IntegrationKind, dict[str, Any]]]
) -> tuple[int, int]:
    with unit_of_work(db_url) as session:
        org = Organization(name="Brand", slug=f"brand-{uuid.uuid4().hex[:8]}", country=country)
        session.add(org)
        session.flush()
        for kind, settings in integrations:
            session.add(
                OrganizationIntegration(
                    organization_id=org.id, kind=kind, secret_ref="SECRET", settings=settings
                )
            )
        campaign = Campaign(
            organization_id=org.id,
            name="Win-back",
            campaign_mode=CampaignMode.AUTOMATED,
            status=CampaignStatus.ACTIVE,
        )
        session.add(campaign)
        session.flush()
        return org.id, campaign.id


def _recipients(
    db_url: str,
    organization_id: int,
    campaign_id: int,
    status: RecipientStatus,
    count: int,
    *,
    at: datetime = MAILED_AT,
    start: int = 0,
) -> None:
    rows = []
    for n in range(start, start + count):
        mailed = status in (S.SENT, S.RECEIVED)
        rows.append(
            {
                "organization_id": organization_id,
                "campaign_id": campaign_id,
                "status": status,
                "status_changed_at": at,
                "email": f"person{n}.{organization_id}@example.com",
                "email_key": f"person{n}.{organization_id}@example.com",
                "first_name": f"P{n}",
                "address1": f"{n + 10} Maple Ave",
                "city": "Portland",
                "region": "OR",
                "postal_code": "97205",
                "country": "US",
                "offer_code": f"TRAIL{organization_id}X{n:05d}" if mailed else None,
                "sent_at": at if mailed else None,
            }
        )
    with unit_of_work(db_url) as session:
        session.execute(sa.insert(Recipient), rows)


@pytest.fixture
def world(db_url: str) -> dict[str, Any]:
    """A US brand on Shopify whose Klaviyo records orders too, and a UK brand on Ometria
    whose Klaviyo is its CDP only; mailed, received, held-out and pending recipients."""
    us, us_campaign = _organization(
        db_url,
        "US",
        [(K.SHOPIFY, {"shop": "trail-shop"}), (K.KLAVIYO, {"placed_order_metric": "Placed Order"})],
    )
    uk, uk_campaign = _organization(db_url, "GB", [(K.OMETRIA, {}), (K.KLAVIYO, {})])
    _recipients(db_url, us, us_campaign, S.SENT, 250)
    _recipients(db_url, us, us_campaign, S.RECEIVED, 50, start=250)
    _recipients(db_url, us, us_campaign, S.HOLDOUT, 80, start=300)
    _recipients(db_url, us, us_campaign, S.PENDING, 20, start=380)
    _recipients(db_url, uk, uk_campaign, S.SENT, 40)
    return {"us": us, "uk": uk}


def _sessions(db_url: str) -> Any:
    return functools.partial(unit_of_work, db_url)


def _now() -> datetime:
    return MAILED_AT + timedelta(minutes=5)


def _orders(
    store: SandboxStore, kind: IntegrationKind, account: str, settings: dict[str, Any]
) -> list[SourceOrder]:
    transport, credential = sandbox_transport(kind, account, store)
    if isinstance(transport, ShopifySandbox):
        transport.bucket = None  # the cost bucket has its own tests; no waiting here
    client = order_client(kind, credential, settings, transport=transport)
    try:
        return [
            o for page in client.order_pages(MAILED_AT - timedelta(days=1)) for o in page.orders
        ]
    finally:
        client.close()


def _people(db_url: str, organization_id: int) -> dict[str, set[Any]]:
    with unit_of_work(db_url) as session:
        rows = session.execute(
            sa.select(
                Recipient.status,
                Recipient.email_key,
                Recipient.address1,
                Recipient.postal_code,
                Recipient.country,
                Recipient.offer_code,
            ).where(Recipient.organization_id == organization_id)
        ).all()
    people: dict[str, set[Any]] = {"mailed": set(), "holdout": set(), "other": set()}
    codes: set[Any] = set()
    for status, key, line1, postal, country, code in rows:
        group = (
            "mailed"
            if status in (S.SENT, S.RECEIVED)
            else "holdout"
            if status == S.HOLDOUT
            else "other"
        )
        people[group] |= {key, address_key(line1, postal, country)}
        if code:
            codes.add(code)
    people["codes"] = codes
    return people


def test_shoppers_place_every_kind_of_order_the_attribution_must_meet(
    db_url: str, world: dict[str, Any]
) -> None:
    store = SandboxStore()
    result = go_shopping(_sessions(db_url), store, clock=_now)

    assert result.organizations == 2 and result.recipients == 250 + 50 + 80 + 40
    assert set(result.kinds) >= EVERY_KIND, result.kinds
    shopify = _orders(store, K.SHOPIFY, "trail-shop", {"shop": "trail-shop"})
    us = _people(db_url, world["us"])

    by_email = [o for o in shopify if email_key(o.email) in us["mailed"]]
    by_address_only = [
        o
        for o in shopify
        if o.email is None
        and o.address is not None
        and address_key(o.address.line1, o.address.postal_code, o.address.country) in us["mailed"]
    ]
    by_code = [o for o in shopify if set(o.discount_codes) & us["codes"]]
    gifts = [o for o in by_code if email_key(o.email) not in us["mailed"]]
    from_holdouts = [o for o in shopify if email_key(o.email) in us["holdout"]]
    strangers = [
        o
        for o in shopify
        if email_key(o.email) not in us["mailed"] | us["holdout"] and not o.discount_codes
    ]
    for found in (by_email, by_address_only, by_code, gifts, from_holdouts, strangers):
        assert found
    assert not [o for o in shopify if email_key(o.email) in us["other"] - us["mailed"]], (
        "pending recipients never buy"
    )
    assert [o for o in shopify if o.cancelled] and [o for o in shopify if o.refunded_minor]
    assert [o for o in shopify if o.total_minor == 0]
    assert {o.currency for o in shopify} == {"USD"}
    assert all(o.ordered_at >= MAILED_AT for o in shopify)
    assert min(o.ordered_at for o in shopify) < MAILED_AT + timedelta(hours=1), "some buy soon"

    # The US brand's Klaviyo records the same orders; the UK brand's orders are in Ometria,
    # its CDP-only Klaviyo gets none.
    klaviyo = _orders(store, K.KLAVIYO, sandbox_account(K.KLAVIYO, world["us"], {}), {})
    assert {o.external_id for o in klaviyo} == {o.external_id.rsplit("/", 1)[1] for o in shopify}
    ometria = _orders(store, K.OMETRIA, sandbox_account(K.OMETRIA, world["uk"], {}), {})
    assert ometria and {o.currency for o in ometria} == {"GBP"}
    assert (
        OrderSandboxData(store).order_numbers(
            K.KLAVIYO, sandbox_account(K.KLAVIYO, world["uk"], {})
        )
        == []
    )


def test_shopping_again_adds_nothing_and_another_store_gets_the_same_orders(
    db_url: str, world: dict[str, Any]
) -> None:
    store, again = SandboxStore(), SandboxStore()
    first = go_shopping(_sessions(db_url), store, clock=_now)
    second = go_shopping(_sessions(db_url), store, clock=_now)
    elsewhere = go_shopping(_sessions(db_url), again, clock=_now)

    assert first.new_orders > 0 and second.new_orders == 0
    assert second.kinds == first.kinds == elsewhere.kinds
    assert OrderSandboxData(store).order_numbers(K.SHOPIFY, "trail-shop") == OrderSandboxData(
        again
    ).order_numbers(K.SHOPIFY, "trail-shop")
    assert _orders(store, K.SHOPIFY, "trail-shop", {"shop": "trail-shop"}) == _orders(
        again, K.SHOPIFY, "trail-shop", {"shop": "trail-shop"}
    )


def test_a_different_seed_shops_differently(db_url: str, world: dict[str, Any]) -> None:
    one, other = SandboxStore(), SandboxStore()
    go_shopping(_sessions(db_url), one, clock=_now)
    go_shopping(_sessions(db_url), other, plan=ShopperPlan(seed=7), clock=_now)
    assert OrderSandboxData(one).order_numbers(K.SHOPIFY, "trail-shop") != OrderSandboxData(
        other
    ).order_numbers(K.SHOPIFY, "trail-shop")


def test_later_runs_look_only_at_recipients_mailed_since_the_last_one(
    db_url: str, world: dict[str, Any]
) -> None:
    store = SandboxStore()
    first_run = MAILED_AT + timedelta(days=1)
    assert go_shopping(_sessions(db_url), store, clock=lambda: first_run).recipients == 420
    second_run = first_run + timedelta(days=1)
    with unit_of_work(db_url) as session:
        campaign_id = session.scalar(
            sa.select(Campaign.id).where(Campaign.organization_id == world["us"])
        )
    _recipients(db_url, world["us"], campaign_id, S.SENT, 5, at=second_run, start=1000)
    _recipients(db_url, world["us"], campaign_id, S.HOLDOUT, 2, at=second_run, start=1005)

    result = go_shopping(_sessions(db_url), store, clock=lambda: second_run)

    assert result.recipients == 7


def test_the_demo_brands_have_their_order_sources(db_url: str) -> None:
    store = SandboxStore()
    with unit_of_work(db_url) as session:
        seed_demo(session, store, today=date(2026, 11, 23))
    with unit_of_work(db_url) as session:  # an older demo database: settings are brought up to date
        session.execute(
            sa.update(OrganizationIntegration)
            .where(OrganizationIntegration.kind == K.KLAVIYO)
            .values(settings={"placed_order_metric": "Placed Order"})
        )
    with unit_of_work(db_url) as session:
        seed_demo(session, store, today=date(2026, 11, 23))
    with unit_of_work(db_url) as session:
        rows = session.execute(
            sa.select(
                Organization.slug,
                OrganizationIntegration.kind,
                OrganizationIntegration.settings,
                OrganizationIntegration.secret_ref,
            )
            .join(Organization, Organization.id == OrganizationIntegration.organization_id)
            .order_by(Organization.slug, OrganizationIntegration.kind)
        ).all()
    assert [(slug, kind, settings) for slug, kind, settings, _ref in rows] == [
        ("bramble-hearth", K.KLAVIYO, {}),
        ("bramble-hearth", K.OMETRIA, {}),
        ("juniper-trail", K.KLAVIYO, {"placed_order_metric": "Placed Order"}),
        ("juniper-trail", K.SHOPIFY, {"shop": "juniper-trail-outfitters"}),
    ]
    assert {ref for *_rest, ref in rows} == {
        "KLAVIYO_API_KEY_BRAMBLE",
        "OMETRIA_API_KEY_BRAMBLE",
        "KLAVIYO_API_KEY_JUNIPER",
        "SHOPIFY_ACCESS_TOKEN_JUNIPER",
    }

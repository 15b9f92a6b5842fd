"""Profile enrichment against the Klaviyo sandbox on the test database: what is fetched,
what is written, what is skipped, one query and one CDP request per page, a 429 waited out
(respx), a CDP failure confined to its organization, and proofing recording the defaults it
printed."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import event, select

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory, engine_for, unit_of_work
from mail_pipeline.db.models import (
    Campaign,
    Organization,
    OrganizationIntegration,
    Recipient,
)
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus, IntegrationKind
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, profile_resource
from mail_pipeline.integrations.renderer.backup import BackupRenderer
from mail_pipeline.integrations.renderer.chain import FallbackRenderer
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.resources.images import SandboxImageHost
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.services.profile_enrichment import (
    ProfileEnrichmentFailed,
    enrich_organization,
    organizations_to_enrich,
)
from mail_pipeline.services.proofing import proof_batch

S = RecipientStatus
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
DESIGN = {
    "template": "classic",
    "brand_name": "Brew Co",
    "headline": "{first_name|Friend}, you're {loyalty_tier|a member}",
    "body": "Loved the {last_product|coffee}? Here is 10% off.",
}
PLAIN_DESIGN = {"template": "classic", "brand_name": "Brew Co", "headline": "Hi {first_name}"}
ADDRESS = {
    "address1": "1 Oak St",
    "city": "Austin",
    "region": "TX",
    "postal_code": "78701",
    "country": "US",
}


@dataclass
class World:
    db_url: str
    sandbox_path: str
    _n: Iterator[int] = field(default_factory=lambda: iter(range(1, 10_000)))

    @property
    def sessions(self) -> SessionFactory:
        return functools.partial(unit_of_work, self.db_url)

    @property
    def cdp(self) -> SandboxCdp:
        return SandboxCdp(sandbox_path=self.sandbox_path)

    @property
    def klaviyo(self) -> KlaviyoSandboxData:
        return KlaviyoSandboxData(shared_store(self.sandbox_path))

    def organization(self, *, klaviyo: bool = True) -> int:
        n = next(self._n)
        with unit_of_work(self.db_url) as session:
            org = Organization(name=f"Brand {n}", slug=f"brand-{n}", country="US")
            session.add(org)
            session.flush()
            if klaviyo:
                session.add(
                    OrganizationIntegration(
                        organization_id=org.id,
                        kind=IntegrationKind.KLAVIYO,
                        secret_ref=f"KLAVIYO_API_KEY_BRAND_{n}",
                        enabled=True,
                    )
                )
            return org.id

    def campaign(self, organization_id: int, design: dict[str, Any] = DESIGN) -> int:
        with unit_of_work(self.db_url) as session:
            campaign = Campaign(
                organization_id=organization_id,
                name="Autumn",
                campaign_mode=CampaignMode.AUTOMATED,
                status=CampaignStatus.ACTIVE,
                design=design,
            )
            session.add(campaign)
            session.flush()
            return campaign.id

    def recipient(
        self,
        campaign_id: int,
        profile_id: str | None,
        status: RecipientStatus = S.PENDING,
        **fields: Any,
    ) -> int:
        with unit_of_work(self.db_url) as session:
            campaign = session.get_one(Campaign, campaign_id)
            values: dict[str, Any] = {
                "first_name": "Ana",
                "email": f"{profile_id or next(self._n)}.{next(self._n)}@example.com",
                **ADDRESS,
                **fields,
            }
            row = Recipient(
                organization_id=campaign.organization_id,
                campaign_id=campaign_id,
                status=status,
                external_profile_id=profile_id,
                **values,
            )
            session.add(row)
            session.flush()
            return row.id

    def profile(self, profile_id: str, properties: dict[str, Any]) -> None:
        self.klaviyo.put_profile(profile_resource(profile_id, None, properties=properties))

    def row(self, recipient_id: int) -> Recipient:
        with unit_of_work(self.db_url) as session:
            row = session.get_one(Recipient, recipient_id)
            session.expunge(row)
            return row


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> World:
    return World(db_url, str(tmp_path / "sandbox.sqlite"))


def test_enrich_sets_fresh_values_removes_missing_ones_and_records_the_time(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    world.profile("P1", {"loyalty_tier": "gold", "last_product": "Espresso", "unused": 1})
    world.profile("P2", {"loyalty_tier": "silver"})
    world.profile("P3", {"loyalty_tier": float("inf"), "last_product": "Tea"})
    full = world.recipient(campaign, "P1", properties={"favorite": "tea"})
    partial = world.recipient(
        campaign, "P2", S.ADDRESS_ENRICHABLE, properties={"last_product": "stale"}
    )
    bad = world.recipient(campaign, "P3", properties={"loyalty_tier": "bronze"})
    gone = world.recipient(campaign, "P-DELETED", properties={"loyalty_tier": "kept"})

    result = enrich_organization(world.sessions, world.cdp, org, NOW)

    assert (result.checked, result.fetched, result.not_found) == (4, 3, 1)
    assert (result.properties_set, result.missing, result.dropped) == (4, 1, 1)
    assert result.reasons == [
        f'recipient {bad}: properties."loyalty_tier" is inf; JSON numbers are finite'
    ]
    assert world.row(full).properties == {
        "favorite": "tea",
        "loyalty_tier": "gold",
        "last_product": "Espresso",
    }
    assert world.row(partial).properties == {"loyalty_tier": "silver"}
    assert world.row(bad).properties == {"loyalty_tier": "bronze", "last_product": "Tea"}
    assert world.row(gone).properties == {"loyalty_tier": "kept"}
    assert {world.row(r).profile_enriched_at for r in (full, partial, bad, gone)} == {NOW}

    # within 24 hours nothing is due; after, everyone is again
    again = enrich_organization(world.sessions, world.cdp, org, NOW + timedelta(hours=23))
    assert again.checked == 0
    later = enrich_organization(world.sessions, world.cdp, org, NOW + timedelta(hours=25))
    assert later.checked == 4


def test_only_due_recipients_of_designs_with_cdp_properties(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    plain = world.campaign(org, PLAIN_DESIGN)
    broken = world.campaign(org, {"template": "t"})  # no headline or brand: invalid
    world.profile("P1", {"loyalty_tier": "gold"})
    due = world.recipient(campaign, "P1")
    skipped = [
        world.recipient(campaign, "P2", S.PROOFED),
        world.recipient(campaign, None),
        world.recipient(campaign, "P3", profile_enriched_at=NOW - timedelta(hours=2)),
        world.recipient(plain, "P1"),
        world.recipient(broken, "P1"),
    ]

    result = enrich_organization(world.sessions, world.cdp, org, NOW)

    assert result.checked == 1
    assert result.invalid_designs == [broken]
    assert world.row(due).properties == {"loyalty_tier": "gold"}
    assert [world.row(r).profile_enriched_at for r in skipped] == [
        None,
        None,
        NOW - timedelta(hours=2),
        None,
        None,
    ]


def test_organizations_to_enrich(world: World) -> None:
    wanted = world.organization()
    world.recipient(world.campaign(wanted), "P1")
    plain = world.organization()
    world.recipient(world.campaign(plain, PLAIN_DESIGN), "P1")
    no_cdp = world.organization(klaviyo=False)
    world.recipient(world.campaign(no_cdp), "P1")
    fresh = world.organization()
    world.recipient(world.campaign(fresh), "P1", profile_enriched_at=NOW - timedelta(hours=1))
    world.organization()  # no recipients at all

    assert organizations_to_enrich(world.sessions, NOW) == [wanted]


@dataclass
class CountingCdp:
    inner: SandboxCdp
    calls: list[int] = field(default_factory=list)

    def profile_properties(
        self, integration: IntegrationRef, profile_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        self.calls.append(len(profile_ids))
        return self.inner.profile_properties(integration, profile_ids)


def test_one_query_and_one_cdp_request_per_page_and_the_limit(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    for n in range(250):
        world.profile(f"P{n}", {"loyalty_tier": "gold"} if n % 2 else {})
        world.recipient(campaign, f"P{n}")
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM recipients" in statement:
            selects.append(statement)

    engine = engine_for(world.db_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        cdp = CountingCdp(world.cdp)
        limited = enrich_organization(world.sessions, cdp, org, NOW, limit=150)
        assert limited.checked == 150 and cdp.calls == [100, 50]
        selects.clear()
        cdp.calls.clear()
        rest = enrich_organization(world.sessions, cdp, org, NOW)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert rest.checked == 100 and cdp.calls == [100]
    # the campaigns query (its EXISTS names recipients) and one page query per page: the
    # full page, then the empty one that ends the loop
    assert len(selects) == 3
    # odd profiles lack last_product, even ones both properties
    assert rest.missing + limited.missing == 125 * 1 + 125 * 2
    assert rest.properties_set + limited.properties_set == 125


@dataclass
class RespxCdp:
    """A real Klaviyo client (respx answers), retries without waiting."""

    waits: list[float] = field(default_factory=list)

    def profile_properties(
        self, integration: IntegrationRef, profile_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        client = KlaviyoClient(
            "pk_test",
            retry=RetryPolicy(max_attempts=3, base_delay=0.01),
            sleep=self.waits.append,
        )
        with client:
            return client.profiles_properties(profile_ids)


def _profiles_page(ids: list[str]) -> httpx.Response:
    data = [
        {"type": "profile", "id": i, "attributes": {"properties": {"loyalty_tier": "gold"}}}
        for i in ids
    ]
    return httpx.Response(200, json={"data": data, "links": {"next": None}})


@respx.mock
def test_klaviyo_429_is_waited_out(world: World) -> None:
    org = world.organization()
    rid = world.recipient(world.campaign(org), "P1")
    route = respx.get("https://a.klaviyo.com/api/profiles").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}, json={"errors": []}),
            _profiles_page(["P1"]),
        ]
    )
    cdp = RespxCdp()

    result = enrich_organization(world.sessions, cdp, org, NOW)

    assert result.properties_set == 1
    assert cdp.waits and cdp.waits[0] >= 2
    request = route.calls[-1].request
    assert request.url.params["filter"] == 'any(id,["P1"])'
    assert request.url.params["fields[profile]"] == "properties"
    assert world.row(rid).properties == {"loyalty_tier": "gold"}


@respx.mock
def test_a_cdp_that_stays_down_fails_that_organization_only(world: World) -> None:
    down, up = world.organization(), world.organization()
    down_rid = world.recipient(world.campaign(down), "P-DOWN")
    up_rid = world.recipient(world.campaign(up), "P-UP")
    respx.get("https://a.klaviyo.com/api/profiles").mock(
        side_effect=lambda request: (
            httpx.Response(429, headers={"Retry-After": "1"}, json={"errors": []})
            if "P-DOWN" in request.url.params["filter"]
            else _profiles_page(["P-UP"])
        )
    )
    cdp = RespxCdp()

    with pytest.raises(ProfileEnrichmentFailed) as failed:
        enrich_organization(world.sessions, cdp, down, NOW)
    result = enrich_organization(world.sessions, cdp, up, NOW)

    assert failed.value.organization_id == down
    assert "the CDP could not be read" in failed.value.reason
    assert world.row(down_rid).profile_enriched_at is None
    assert result.properties_set == 1
    assert world.row(up_rid).properties == {"loyalty_tier": "gold"}


def test_sandbox_profiles_endpoint_pages_and_ignores_unknown_ids(world: World) -> None:
    for n in range(5):
        world.profile(f"P{n}", {"n": n})
    client = world.cdp.client_for(IntegrationRef(1, IntegrationKind.KLAVIYO, "KLAVIYO_API_KEY", {}))
    with client:
        found = client.profiles_properties(["P0", "P1", "P2", "P3", "NOPE", "P1"], page_size=2)
    assert found == {f"P{n}": {"n": n} for n in range(4)}


def test_demo_profiles_have_some_properties_and_lack_others() -> None:
    from mail_pipeline.integrations.klaviyo.sandbox_data import demo_profiles

    properties = [p["attributes"]["properties"] for p in demo_profiles(6)]
    assert [("loyalty_tier" in p, "last_product" in p) for p in properties] == [
        (True, True),
        (True, False),
        (False, True),
        (True, False),
        (True, True),
        (False, False),
    ]


def test_proofing_records_the_defaults_it_printed(world: World, tmp_path: Path) -> None:
    org = world.organization()
    campaign = world.campaign(org)
    with_tier = world.recipient(campaign, "P1", properties={"loyalty_tier": "gold"})
    without = world.recipient(campaign, "P2", first_name=None)
    with unit_of_work(world.db_url) as session:
        batch = RecipientGateway(session).claim_batch(S.PENDING, S.PROOFING_STAGED, 10)
    images = SandboxImageHost(
        sandbox_path=world.sandbox_path, image_dir=str(tmp_path / "images")
    ).client()

    result = proof_batch(
        world.sessions,
        batch.batch_id,
        FallbackRenderer([BackupRenderer(antialias=False)]),
        images,
        id_key="test-proof-id-key",
    )

    assert result.proofed == 2
    with unit_of_work(world.db_url) as session:
        rows = {r.id: r.proof_defaults for r in session.scalars(select(Recipient))}
    assert rows == {
        with_tier: ["last_product"],
        without: ["first_name", "last_product", "loyalty_tier"],
    }

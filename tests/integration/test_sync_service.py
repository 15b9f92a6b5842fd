"""The recipient sync service (seed 001 §1) against the Klaviyo sandbox, on SQLite and (with
MAIL_PIPELINE_TEST_DATABASE_URL) PostgreSQL.

Profiles are seeded in the sandbox Klaviyo account and read by the real Klaviyo client through
``SandboxCdp``; every assertion is on what the sync reports *and* what it wrote.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.locks import CampaignLocks, LockLost
from mail_pipeline.db.models import (
    BlocklistEntry,
    Campaign,
    CampaignSyncLock,
    Organization,
    OrganizationIntegration,
    Recipient,
)
from mail_pipeline.domain.addresses import address_key
from mail_pipeline.domain.campaigns import (
    CampaignMode,
    CampaignStatus,
    IntegrationKind,
    OrganizationStatus,
)
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.klaviyo.client import KlaviyoClient
from mail_pipeline.integrations.klaviyo.models import ProfilePage
from mail_pipeline.integrations.klaviyo.sandbox import SANDBOX_API_KEY, KlaviyoSandbox
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, profile_resource
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.resources.cdp import SandboxCdp
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.services.sync import (
    CampaignSyncResult,
    Outcome,
    SyncSettings,
    sync_campaign,
    sync_organization,
)

S = RecipientStatus
M = CampaignMode
C = CampaignStatus
ON_POSTGRES = bool(os.environ.get("MAIL_PIPELINE_TEST_DATABASE_URL"))
SETTINGS = SyncSettings(holder="test-sync")
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


# -- the world ------------------------------------------------------------------------------


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

    def organization(
        self,
        *,
        klaviyo: bool = True,
        integration_enabled: bool = True,
        status: OrganizationStatus = OrganizationStatus.ACTIVE,
        country: str = "US",
        printer_preference: str | None = None,
    ) -> int:
        n = next(self._n)
        with unit_of_work(self.db_url) as session:
            org = Organization(
                name=f"Brand {n}",
                slug=f"brand-{n}",
                country=country,
                status=status,
                printer_preference=printer_preference,
            )
            session.add(org)
            session.flush()
            if klaviyo:
                session.add(
                    OrganizationIntegration(
                        organization_id=org.id,
                        kind=IntegrationKind.KLAVIYO,
                        secret_ref=f"KLAVIYO_API_KEY_BRAND_{n}",
                        enabled=integration_enabled,
                    )
                )
            return org.id

    def campaign(
        self,
        organization_id: int,
        name: str,
        *,
        mode: CampaignMode = M.AUTOMATED,
        status: CampaignStatus = C.ACTIVE,
        segment: str | None = None,
        **fields: Any,
    ) -> int:
        with unit_of_work(self.db_url) as session:
            campaign = Campaign(
                organization_id=organization_id,
                name=name,
                campaign_mode=mode,
                status=status,
                provider_segment_id=segment,
                **fields,
            )
            session.add(campaign)
            session.flush()
            return campaign.id

    def segment(self, segment_id: str, profiles: list[Any]) -> None:
        self.klaviyo.put_segment_profiles(segment_id, profiles)

    def recipients(self, campaign_id: int) -> dict[str, Recipient]:
        """The campaign's recipients by Klaviyo profile id."""
        with unit_of_work(self.db_url) as session:
            rows = session.scalars(
                select(Recipient).where(Recipient.campaign_id == campaign_id)
            ).all()
            return {r.external_profile_id or f"#{r.id}": r for r in rows}

    def statuses(self, campaign_id: int) -> dict[str, RecipientStatus]:
        return {pid: r.status for pid, r in self.recipients(campaign_id).items()}

    def count(self) -> int:
        with unit_of_work(self.db_url) as session:
            return len(session.scalars(select(Recipient.id)).all())


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> World:
    return World(db_url, str(tmp_path / "sandbox.sqlite"))


def person(
    pid: str,
    email: str | None = None,
    *,
    line1: str | None = None,
    line2: str | None = None,
    city: str | None = "New York",
    region: str | None = "NY",
    zip_code: str | None = "10017",
    country: str | None = "United States",
    address: bool = True,
    first_name: str | None = "Ann",
    last_name: str | None = "Lee",
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Klaviyo profile resource with a US address unless ``address=False``."""
    location = None
    if address:
        location = {
            "address1": line1 or f"1 {pid} Street",
            "address2": line2,
            "city": city,
            "region": region,
            "zip": zip_code,
            "country": country,
        }
    email = email if email is not None else f"{pid.lower()}@example.com"
    return profile_resource(pid, email, first_name, last_name, location, properties)


def crowd(prefix: str, n: int) -> list[dict[str, Any]]:
    return [person(f"{prefix}{i:04d}", line1=f"{i + 1} Elm Street") for i in range(n)]


def sync(world: World, campaign_id: int, settings: SyncSettings = SETTINGS) -> CampaignSyncResult:
    return sync_campaign(world.sessions, world.cdp, campaign_id, settings)


# -- the mode gate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "syncs"),
    [
        (M.AUTOMATED, C.PENDING, True),
        (M.AUTOMATED, C.ACTIVE, True),
        (M.AUTOMATED, C.PAUSED, True),
        (M.AUTOMATED, C.COMPLETED, False),
        (M.ONE_OFF, C.PENDING, True),
        (M.ONE_OFF, C.ACTIVE, False),
        (M.ONE_OFF, C.PAUSED, False),
        (M.ONE_OFF, C.COMPLETED, False),
    ],
)
def test_the_mode_gate_is_checked_inside_the_sync(
    world: World, mode: CampaignMode, status: CampaignStatus, syncs: bool
) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Gate", mode=mode, status=status, segment="SEG-GATE")
    world.segment("SEG-GATE", [person("P1"), person("P2")])

    result = sync(world, campaign)

    if syncs:
        assert result.outcome is Outcome.SYNCED
        assert result.created == Counter({S.PENDING: 2})
        assert world.statuses(campaign) == {"P1": S.PENDING, "P2": S.PENDING}
    else:
        assert result.outcome is Outcome.NOT_A_CANDIDATE
        assert result.detail == f"a {mode} campaign in {status} does not sync"
        assert sum(result.created.values()) == 0 and result.profiles_seen == 0
        assert world.statuses(campaign) == {}


def test_the_organization_sync_takes_only_candidates(world: World) -> None:
    org = world.organization()
    active_one_off = world.campaign(org, "Sent list", mode=M.ONE_OFF, status=C.ACTIVE, segment="A")
    paused_auto = world.campaign(org, "Paused auto", status=C.PAUSED, segment="B")
    pending_one_off = world.campaign(
        org, "Next drop", mode=M.ONE_OFF, status=C.PENDING, segment="C"
    )
    done = world.campaign(org, "Old", status=C.COMPLETED, segment="D")
    for segment in "ABCD":
        world.segment(segment, [person(f"{segment}1")])

    result = sync_organization(world.sessions, world.cdp, org, SETTINGS)

    assert [r.campaign_id for r in result.campaigns] == [paused_auto, pending_one_off]
    assert world.statuses(active_one_off) == {} and world.statuses(done) == {}
    assert result.created == Counter({S.PENDING: 2})


def test_a_one_off_campaign_forced_by_id_still_obeys_the_gate(world: World) -> None:
    """A manual sync names the campaign; an Active one_off is refused even so."""
    org = world.organization()
    campaign = world.campaign(org, "Sent", mode=M.ONE_OFF, status=C.ACTIVE, segment="SEG")
    world.segment("SEG", [person("P1")])

    result = sync_organization(world.sessions, world.cdp, org, SETTINGS, campaign_ids=[campaign])

    assert [(r.outcome, sum(r.created.values())) for r in result.campaigns] == [
        (Outcome.NOT_A_CANDIDATE, 0)
    ]
    assert world.count() == 0


def test_a_campaign_of_another_organization_or_an_inactive_one_is_not_synced(
    world: World,
) -> None:
    org = world.organization()
    other = world.organization()
    churned = world.organization(status=OrganizationStatus.CHURNED)
    foreign = world.campaign(other, "Theirs", segment="SEG")
    churned_campaign = world.campaign(churned, "Churned", segment="SEG")
    world.segment("SEG", [person("P1")])

    result = sync_organization(world.sessions, world.cdp, org, SETTINGS, campaign_ids=[foreign])
    churned_result = sync(world, churned_campaign)

    assert result.campaigns[0].outcome is Outcome.NOT_A_CANDIDATE
    assert f"belongs to organization {other}" in (result.campaigns[0].detail or "")
    assert churned_result.outcome is Outcome.NOT_A_CANDIDATE
    assert churned_result.detail == "the organization is not active"
    assert world.count() == 0


# -- missing segment or integration ---------------------------------------------------------


def test_a_one_off_without_a_segment_has_nothing_to_sync(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "VIP upload", mode=M.ONE_OFF, status=C.PENDING)

    result = sync(world, campaign)

    assert result.outcome is Outcome.NO_SEGMENT
    assert sum(result.created.values()) == 0
    assert world.count() == 0


def test_an_automated_campaign_without_a_segment_is_misconfigured_and_the_rest_still_syncs(
    world: World,
) -> None:
    org = world.organization()
    broken = world.campaign(org, "Win-back", status=C.ACTIVE)
    fine = world.campaign(org, "Welcome", status=C.ACTIVE, segment="SEG-OK")
    world.segment("SEG-OK", [person("P1"), person("P2")])

    result = sync_organization(world.sessions, world.cdp, org, SETTINGS)

    by_id = {r.campaign_id: r for r in result.campaigns}
    assert by_id[broken].outcome is Outcome.MISCONFIGURED
    assert by_id[broken].detail == (
        f"automated campaign 'Win-back' (id {broken}) has no provider_segment_id"
    )
    assert by_id[fine].outcome is Outcome.SYNCED
    assert world.statuses(fine) == {"P1": S.PENDING, "P2": S.PENDING}
    assert [r.campaign_id for r in result.with_outcome(Outcome.MISCONFIGURED)] == [broken]


@pytest.mark.parametrize("integration", ["none", "disabled"])
def test_an_organization_without_an_enabled_klaviyo_integration_is_misconfigured(
    world: World, integration: str
) -> None:
    org = world.organization(klaviyo=integration != "none", integration_enabled=False)
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1")])

    result = sync(world, campaign)

    assert result.outcome is Outcome.MISCONFIGURED
    assert "no enabled Klaviyo integration" in (result.detail or "")
    assert "'Win-back'" in (result.detail or "")
    assert world.count() == 0


# -- what each profile becomes --------------------------------------------------------------


def test_a_resync_creates_nothing_new_and_a_new_member_is_added_once(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment(
        "SEG",
        [
            person("P1"),
            person("P2", address=False),
            person("P3", email="p1@example.com"),
            {"type": "profile", "id": "BAD", "attributes": {"email": ["x"]}},
        ],
    )
    first = sync(world, campaign)
    before = world.statuses(campaign)

    second = sync(world, campaign)

    assert sum(first.created.values()) == 4
    assert second.outcome is Outcome.SYNCED
    assert second.created == Counter() and second.profiles_seen == 4
    assert world.statuses(campaign) == before

    world.segment(
        "SEG",
        [
            person("P1"),
            person("P2", address=False),
            person("P3", email="p1@example.com"),
            person("P4"),
        ],
    )
    third = sync(world, campaign)
    assert third.created == Counter({S.PENDING: 1})
    assert world.statuses(campaign) == {**before, "P4": S.PENDING}
    with unit_of_work(world.db_url) as session:
        synced_at = session.get_one(Campaign, campaign).last_synced_at
    assert synced_at is not None


def test_the_same_person_twice_in_a_segment_is_skipped_naming_the_first(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment(
        "SEG",
        [
            person(
                "P1", email="Ann.Lee@Example.com", line1="12 North Main Street", zip_code="10017"
            ),
            person("P2", email=" ann.lee@example.com "),
            person("P3", email="other@example.com", line1="12 N Main St", zip_code="10017-1234"),
        ],
    )

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.created == Counter({S.PENDING: 1, S.SKIPPED: 2})
    assert rows["P1"].status is S.PENDING
    assert (rows["P2"].status, rows["P2"].status_reason) == (
        S.SKIPPED,
        "duplicate of profile P1 (same email)",
    )
    assert (rows["P3"].status, rows["P3"].status_reason) == (
        S.SKIPPED,
        "duplicate of profile P1 (same address)",
    )


def test_blocklisted_emails_and_addresses_of_the_org_and_everyone_are_blacklisted(
    world: World,
) -> None:
    org = world.organization()
    other_org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    blocked_address = address_key("7 Oak Avenue", "10017", "US")
    global_address = address_key("9 Park Road", "10017", "US")
    with unit_of_work(world.db_url) as session:
        session.add_all(
            [
                BlocklistEntry(organization_id=org, kind="email", value="org-block@example.com"),
                BlocklistEntry(organization_id=None, kind="email", value="all-block@example.com"),
                BlocklistEntry(organization_id=org, kind="address", value=blocked_address),
                BlocklistEntry(organization_id=None, kind="address", value=global_address),
                # another brand's do-not-mail list does not apply here
                BlocklistEntry(organization_id=other_org, kind="email", value="theirs@example.com"),
            ]
        )
    world.segment(
        "SEG",
        [
            person("P1", email="ORG-BLOCK@example.com"),
            person("P2", email="all-block@example.com"),
            person("P3", line1="7 Oak Ave"),
            person("P4", line1="9 Park Road", country="US"),
            person("P5", email="theirs@example.com"),
            person("P6"),
        ],
    )

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.created == Counter({S.BLACKLISTED: 4, S.PENDING: 2})
    assert {pid: (r.status, r.status_reason) for pid, r in rows.items()} == {
        "P1": (S.BLACKLISTED, "email address is on the blocklist"),
        "P2": (S.BLACKLISTED, "email address is on the blocklist"),
        "P3": (S.BLACKLISTED, "postal address is on the blocklist"),
        "P4": (S.BLACKLISTED, "postal address is on the blocklist"),
        "P5": (S.PENDING, None),
        "P6": (S.PENDING, None),
    }


def test_cross_campaign_exclusion_within_an_organization_not_across_organizations(
    world: World,
) -> None:
    org = world.organization()
    first = world.campaign(org, "Win-back", segment="SEG-A")
    second = world.campaign(org, "Spring launch", mode=M.ONE_OFF, status=C.PENDING, segment="SEG-B")
    other_org = world.organization()
    elsewhere = world.campaign(other_org, "Their win-back", segment="SEG-B")
    world.segment("SEG-A", [person("A1"), person("A2", email="shared@example.com")])
    world.segment(
        "SEG-B",
        [
            person("B1", email="a1@example.com"),  # same person as A1 (same email)
            person("B2", line1=None),  # a new person
            person("B3", email="shared@example.com", address=False),
        ],
    )

    result = sync_organization(world.sessions, world.cdp, org, SETTINGS)
    theirs = sync(world, elsewhere)

    assert [r.outcome for r in result.campaigns] == [Outcome.SYNCED, Outcome.SYNCED]
    assert world.statuses(first) == {"A1": S.PENDING, "A2": S.PENDING}
    rows = world.recipients(second)
    assert (rows["B1"].status, rows["B1"].status_reason) == (
        S.SKIPPED,
        "already a recipient of campaign 'Win-back'",
    )
    assert (rows["B3"].status, rows["B3"].status_reason) == (
        S.SKIPPED,
        "already a recipient of campaign 'Win-back'",
    )
    assert rows["B2"].status is S.PENDING
    # another brand's campaigns never exclude anyone
    assert theirs.created == Counter({S.PENDING: 2, S.ADDRESS_ENRICHABLE: 1})


def test_cross_campaign_exclusion_matches_addresses_and_ignores_skipped_recipients(
    world: World,
) -> None:
    org = world.organization()
    capped = world.campaign(org, "Capped", segment="SEG-A", total_send_cap=1)
    second = world.campaign(org, "Second", segment="SEG-B")
    world.segment("SEG-A", [person("A1", line1="5 Elm Street"), person("A2")])
    world.segment(
        "SEG-B",
        [
            person("B1", email="new@example.com", line1="5 Elm St"),  # A1's address
            person("B2", email="a2@example.com"),  # A2 was Skipped there: not excluded
        ],
    )

    sync_organization(world.sessions, world.cdp, org, SETTINGS)

    assert world.statuses(capped) == {"A1": S.PENDING, "A2": S.SKIPPED}
    rows = world.recipients(second)
    assert (rows["B1"].status, rows["B1"].status_reason) == (
        S.SKIPPED,
        "already a recipient of campaign 'Capped'",
    )
    assert rows["B2"].status is S.PENDING


def test_the_holdout_is_roughly_its_percentage_and_stable(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG", holdout_percentage=Decimal(20))
    world.segment("SEG", crowd("H", 400))

    result = sync(world, campaign)
    held = {pid for pid, s in world.statuses(campaign).items() if s is S.HOLDOUT}
    with unit_of_work(world.db_url) as session:
        session.execute(delete(Recipient).where(Recipient.campaign_id == campaign))
    again = sync(world, campaign)
    held_again = {pid for pid, s in world.statuses(campaign).items() if s is S.HOLDOUT}

    assert 50 <= result.created[S.HOLDOUT] <= 110, result.created  # 80 expected
    assert result.created[S.HOLDOUT] + result.created[S.PENDING] == 400
    assert held == held_again and again.created == result.created
    reasons = {
        r.status_reason for r in world.recipients(campaign).values() if r.status is S.HOLDOUT
    }
    assert reasons == {"in the campaign's 20.00% holdout"}


def test_the_total_send_cap_skips_the_rest_across_syncs(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG", total_send_cap=3)
    world.segment("SEG", crowd("P", 5))

    first = sync(world, campaign)
    world.segment("SEG", crowd("P", 7))
    second = sync(world, campaign)

    assert first.created == Counter({S.PENDING: 3, S.SKIPPED: 2})
    assert second.created == Counter({S.SKIPPED: 2})
    rows = world.recipients(campaign)
    skipped = {pid: r.status_reason for pid, r in rows.items() if r.status is S.SKIPPED}
    assert set(skipped) == {"P0003", "P0004", "P0005", "P0006"}
    assert set(skipped.values()) == {"the campaign's total send cap is reached"}


def test_a_profile_without_an_address_waits_for_enrichment(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment(
        "SEG",
        [
            person("P1", address=False),
            person("P2", city=None),  # a street but no city: not enough to mail
            person("P3"),
        ],
    )

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.created == Counter({S.ADDRESS_ENRICHABLE: 2, S.PENDING: 1})
    assert rows["P1"].email == "p1@example.com" and rows["P1"].address1 is None
    assert rows["P3"].country == "US" and rows["P3"].address_key is not None


def test_malformed_profiles_are_accounted_for(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    no_id = person("")
    world.segment(
        "SEG",
        [
            person("P1"),
            {"type": "profile", "id": "BAD1", "attributes": {"email": ["a@example.com"]}},
            {"type": "profile", "id": "BAD2", "attributes": "oops"},
            no_id,
            person("P2"),
        ],
    )

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.outcome is Outcome.SYNCED and result.profiles_seen == 5
    assert result.created == Counter({S.PENDING: 2, S.ERROR: 2})
    assert rows["BAD1"].status is S.ERROR
    assert rows["BAD1"].status_reason == (
        "Klaviyo profile BAD1 is malformed: email is a list, not text"
    )
    assert rows["BAD2"].status_reason == (
        "Klaviyo profile BAD2 is malformed: attributes is str, not an object"
    )
    assert result.rejected == [
        "Klaviyo a profile without a usable id is malformed: the resource has no id"
    ]
    assert set(rows) == {"P1", "P2", "BAD1", "BAD2"}
    # re-reading the same bad profiles adds nothing
    assert sync(world, campaign).created == Counter()


def test_an_unknown_country_is_an_error_with_the_reason(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1", country="Atlantis"), person("P2", country="USA")])

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.created == Counter({S.ERROR: 1, S.PENDING: 1})
    assert rows["P1"].status is S.ERROR
    assert rows["P1"].status_reason == "unknown country (not an ISO 3166 country name or code)"
    assert rows["P2"].country == "US"


# -- the campaign lock ----------------------------------------------------------------------


def _lock_row(world: World, campaign_id: int) -> tuple[str, int]:
    with unit_of_work(world.db_url) as session:
        row = session.get_one(CampaignSyncLock, campaign_id)
        return row.holder, row.token


def test_a_campaign_whose_lock_is_held_elsewhere_is_left_alone(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1")])
    with unit_of_work(world.db_url) as session:
        lease = CampaignLocks(session).acquire(
            campaign, "manual:ana", timedelta(minutes=10), now=T0
        )
    assert lease is not None

    locked = sync(world, campaign, SyncSettings(holder="schedule", clock=lambda: T0))

    assert locked.outcome is Outcome.LOCKED
    assert sum(locked.created.values()) == 0
    assert world.count() == 0
    assert _lock_row(world, campaign) == ("manual:ana", lease.token), "the lock stays theirs"

    # once that lease has run out, the next sync takes the lock and syncs
    later = SyncSettings(holder="schedule", clock=lambda: T0 + timedelta(minutes=11))
    assert sync(world, campaign, later).created == Counter({S.PENDING: 1})


def test_a_lock_whose_holder_has_ended_is_taken_over_at_once(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1")])
    with unit_of_work(world.db_url) as session:
        lease = CampaignLocks(session).acquire(campaign, "run:dead", timedelta(minutes=30), now=T0)
    assert lease is not None
    asked: list[str] = []

    def gone(holder: str) -> bool:
        asked.append(holder)
        return holder == "run:dead"

    result = sync(
        world, campaign, SyncSettings(holder="run:next", clock=lambda: T0, holder_gone=gone)
    )

    assert asked == ["run:dead"]
    assert result.outcome is Outcome.SYNCED
    assert result.created == Counter({S.PENDING: 1})
    # the takeover bumped the token, so a write of the dead holder's lease would be refused
    with unit_of_work(world.db_url) as session, pytest.raises(LockLost):
        CampaignLocks(session).verify(lease, now=T0)


def test_a_lock_whose_holder_is_alive_is_not_taken_over(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1")])
    with unit_of_work(world.db_url) as session:
        lease = CampaignLocks(session).acquire(campaign, "run:alive", timedelta(minutes=30), now=T0)
    assert lease is not None

    result = sync(
        world,
        campaign,
        SyncSettings(holder="run:next", clock=lambda: T0, holder_gone=lambda holder: False),
    )

    assert result.outcome is Outcome.LOCKED
    assert world.count() == 0
    assert _lock_row(world, campaign) == ("run:alive", lease.token)


def test_a_lease_that_expires_during_the_sync_writes_nothing(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1"), person("P2")])
    ticks = iter([T0, T0 + timedelta(minutes=31), T0 + timedelta(minutes=31)])

    result = sync(world, campaign, SyncSettings(holder="slow", clock=lambda: next(ticks, T0)))

    assert result.outcome is Outcome.FAILED
    assert result.detail == (
        f"the sync lock of campaign {campaign} expired and was taken over; slow wrote nothing"
    )
    assert result.created == Counter()
    assert world.count() == 0
    with unit_of_work(world.db_url) as session:
        assert session.get_one(Campaign, campaign).last_synced_at is None


@dataclass
class TakeoverWhileReading:
    """Another holder takes the campaign's lock (after the lease ran out) while the segment is
    being read."""

    inner: SandboxCdp
    db_url: str
    campaign_id: int
    when: datetime

    def segment_pages(self, integration: IntegrationRef, segment_id: str) -> Iterator[ProfilePage]:
        pages = list(self.inner.segment_pages(integration, segment_id))
        with unit_of_work(self.db_url) as session:
            taken = CampaignLocks(session).acquire(
                self.campaign_id, "manual:ana", timedelta(minutes=30), now=self.when
            )
        assert taken is not None
        yield from pages


def test_a_sync_whose_lock_was_taken_over_writes_nothing_and_frees_nothing(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1"), person("P2")])
    later = T0 + timedelta(minutes=31)
    clock = iter([T0, later, later, later])
    cdp = TakeoverWhileReading(world.cdp, world.db_url, campaign, later)

    result = sync_campaign(
        world.sessions, cdp, campaign, SyncSettings(holder="slow", clock=lambda: next(clock))
    )

    assert result.outcome is Outcome.FAILED and "slow wrote nothing" in (result.detail or "")
    assert world.count() == 0
    holder, token = _lock_row(world, campaign)
    assert (holder, token) == ("manual:ana", 2), "the new holder keeps its lease"
    with unit_of_work(world.db_url) as session:
        assert CampaignLocks(session).acquire(campaign, "x", timedelta(1), now=later) is None


def test_the_lock_is_released_after_a_sync(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1")])

    sync(world, campaign, SyncSettings(holder="first"))

    with unit_of_work(world.db_url) as session:
        lease = CampaignLocks(session).acquire(campaign, "second", timedelta(minutes=5))
    assert lease is not None and lease.token == 2


# -- the CDP failing ------------------------------------------------------------------------


@dataclass
class PartlyBrokenCdp:
    """The sandbox CDP, except for the named segments, which are read with a client that
    meets an outage (every request 503) or a revoked API key (401)."""

    inner: SandboxCdp
    store_path: str
    failures: dict[str, str]
    requests: list[str] = field(default_factory=list)

    def segment_pages(self, integration: IntegrationRef, segment_id: str) -> Iterator[ProfilePage]:
        failure = self.failures.get(segment_id)
        if failure is None:
            yield from self.inner.segment_pages(integration, segment_id)
            return
        self.requests.append(segment_id)
        behaviour = SandboxBehaviour(failure_rate=1.0 if failure == "5xx" else 0.0)
        transport = KlaviyoSandbox(shared_store(self.store_path), behaviour)
        key = SANDBOX_API_KEY if failure == "5xx" else "pk_revoked_key"
        with KlaviyoClient(
            key, transport=transport, retry=RetryPolicy(max_attempts=2), sleep=lambda _s: None
        ) as client:
            yield from client.iter_segment_profiles(segment_id)


@pytest.mark.parametrize(
    ("failure", "says", "status"),
    [
        ("5xx", "klaviyo: service temporarily unavailable", "HTTP 503"),
        ("auth", "klaviyo: Incorrect authentication credentials.", "HTTP 401"),
    ],
)
def test_a_cdp_failure_fails_that_campaign_only(
    world: World, failure: str, says: str, status: str
) -> None:
    org = world.organization()
    broken = world.campaign(org, "Win-back", segment="SEG-DOWN")
    fine = world.campaign(org, "Welcome", segment="SEG-OK")
    world.segment("SEG-DOWN", [person("D1")])
    world.segment("SEG-OK", [person("P1")])
    cdp = PartlyBrokenCdp(world.cdp, world.sandbox_path, {"SEG-DOWN": failure})

    result = sync_organization(world.sessions, cdp, org, SETTINGS)

    by_id = {r.campaign_id: r for r in result.campaigns}
    assert cdp.requests == ["SEG-DOWN"]
    assert by_id[broken].outcome is Outcome.FAILED
    assert (by_id[broken].detail or "").startswith(f"reading the segment failed: {says}")
    assert status in (by_id[broken].detail or "")
    assert world.statuses(broken) == {}
    assert by_id[fine].outcome is Outcome.SYNCED
    assert world.statuses(fine) == {"P1": S.PENDING}
    # the failed sync released its lock: the next one may run
    with unit_of_work(world.db_url) as session:
        assert CampaignLocks(session).acquire(broken, "next", timedelta(minutes=1)) is not None


def test_a_segment_klaviyo_does_not_know_fails_with_klaviyos_words(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG-GONE")

    result = sync(world, campaign)

    assert result.outcome is Outcome.FAILED
    assert "A segment with id SEG-GONE does not exist" in (result.detail or "")
    assert "HTTP 404" in (result.detail or "")


# -- bugs -----------------------------------------------------------------------------------


def test_a_person_already_in_error_is_a_duplicate_when_they_come_back_in_a_later_sync(
    world: World,
) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1", email="ann@example.com", country="Atlantis")])
    sync(world, campaign)
    world.segment(
        "SEG",
        [
            person("P1", email="ann@example.com", country="Atlantis"),
            person("P2", email="ann@example.com"),
        ],
    )

    sync(world, campaign)

    rows = world.recipients(campaign)
    assert rows["P1"].status is S.ERROR
    assert (rows["P2"].status, rows["P2"].status_reason) == (
        S.SKIPPED,
        "duplicate of profile P1 (same email)",
    )


def test_a_person_in_error_is_a_duplicate_within_the_same_sync_too(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment(
        "SEG",
        [
            person("P1", email="ann@example.com", country="Atlantis"),
            person("P2", email="ann@example.com"),
        ],
    )

    sync(world, campaign)

    rows = world.recipients(campaign)
    assert rows["P1"].status is S.ERROR
    assert (rows["P2"].status, rows["P2"].status_reason) == (
        S.SKIPPED,
        "duplicate of profile P1 (same email)",
    )


def test_an_over_long_profile_field_does_not_break_the_sync(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    later = world.campaign(org, "Welcome", segment="SEG-OK")
    world.segment(
        "SEG", [person("P1", zip_code="10017 please leave at the back door"), person("P2")]
    )
    world.segment("SEG-OK", [person("Q1")])

    result = sync_organization(world.sessions, world.cdp, org, SETTINGS)

    assert [r.outcome for r in result.campaigns] == [Outcome.SYNCED, Outcome.SYNCED]
    assert world.statuses(campaign)["P2"] is S.PENDING
    assert "P1" in world.statuses(campaign), "the long profile is accounted for"
    assert world.statuses(later) == {"Q1": S.PENDING}


# -- one profile never fails its campaign's sync --------------------------------------------


def assert_fits_its_columns(rows: dict[str, Recipient]) -> None:
    """What PostgreSQL would refuse and SQLite would keep: a value longer than its column,
    or a NUL character."""
    for pid, row in rows.items():
        for column in Recipient.__table__.columns:
            value = getattr(row, column.key)
            if isinstance(value, str):
                assert "\x00" not in value, (pid, column.key)
                length = getattr(column.type, "length", None)
                assert length is None or len(value) <= length, (pid, column.key, len(value))


def test_an_address_line_longer_than_its_column_fails_that_profile_only(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    later = world.campaign(org, "Welcome", segment="SEG-OK")
    world.segment("SEG", [person("P1", line1="1 " + "Meadow" * 83), person("P2")])
    world.segment("SEG-OK", [person("Q1")])

    result = sync_organization(world.sessions, world.cdp, org, SETTINGS)

    assert [r.outcome for r in result.campaigns] == [Outcome.SYNCED, Outcome.SYNCED]
    rows = world.recipients(campaign)
    assert (rows["P1"].status, rows["P1"].status_reason) == (
        S.ERROR,
        "address line 1 is 500 characters long; at most 200 fit",
    )
    assert rows["P2"].status is S.PENDING
    assert world.statuses(later) == {"Q1": S.PENDING}
    assert_fits_its_columns(rows)


def test_address_lines_too_long_together_are_judged_and_their_key_fits(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    line1, line2 = "1" + " Longmeadow Close" * 8, "Unit" + " 9" * 75  # 291 characters
    world.segment(
        "SEG",
        [
            person("P1", line1=line1, line2=line2),
            person("G1", line1=line1, line2=line2, region=None, zip_code="sw1a1aa", country="UK"),
            person("P2"),
        ],
    )

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.outcome is Outcome.SYNCED
    assert (rows["P1"].status, rows["P1"].status_reason) == (
        S.ERROR,
        "address lines 1 and 2 are 291 characters together; Lob takes at most 50",
    )
    # Stannp has no such limit: mailable, and its long matching key is bounded
    assert (rows["G1"].status, rows["G1"].country, rows["G1"].postal_code) == (
        S.PENDING,
        "GB",
        "SW1A 1AA",
    )
    assert rows["G1"].address_key == address_key(line1, "SW1A 1AA", "GB", line2)
    assert len(rows["G1"].address_key or "") == 300
    assert rows["P2"].status is S.PENDING
    assert_fits_its_columns(rows)


NUL = "\x00"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"email": f"ann{NUL}@example.com"}, "email contains a NUL character (U+0000)"),
        ({"first_name": f"A{NUL}nn"}, "first name contains a NUL character (U+0000)"),
        ({"last_name": f"L{NUL}"}, "last name contains a NUL character (U+0000)"),
        ({"line1": f"1 Main{NUL} St"}, "address line 1 contains a NUL character (U+0000)"),
        ({"line2": f"Apt{NUL}"}, "address line 2 contains a NUL character (U+0000)"),
        ({"city": f"New{NUL}York"}, "city contains a NUL character (U+0000)"),
        ({"region": f"N{NUL}Y"}, "region contains a NUL character (U+0000)"),
        ({"zip_code": f"100{NUL}17"}, "postal code contains a NUL character (U+0000)"),
        ({"country": f"US{NUL}"}, "country contains a NUL character (U+0000)"),
        (
            {"properties": {"note": f"a{NUL}b"}},
            'properties."note" contains a NUL character (U+0000), which JSON in PostgreSQL refuses',
        ),
        (
            {"properties": {f"k{NUL}": 1}},
            "properties key contains a NUL character (U+0000), which JSON in PostgreSQL refuses",
        ),
        ({"first_name": "\ud800"}, "first name contains an unpaired surrogate (U+D800)"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_a_nul_in_any_text_field_fails_that_profile_only(
    world: World, overrides: dict[str, Any], reason: str
) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1", **overrides), person("P2")])

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.outcome is Outcome.SYNCED, result.detail
    assert (rows["P1"].status, rows["P1"].status_reason) == (S.ERROR, reason)
    assert rows["P2"].status is S.PENDING
    assert_fits_its_columns(rows)
    assert NUL not in str(rows["P1"].properties)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")],
)
def test_a_non_finite_number_in_properties_fails_that_profile_only(
    world: World, value: float, shown: str
) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1", properties={"stats": [1, {"score": value}]}), person("P2")])

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.outcome is Outcome.SYNCED, result.detail
    assert (rows["P1"].status, rows["P1"].status_reason) == (
        S.ERROR,
        f'properties."stats"[1]."score" is {shown}; JSON numbers are finite',
    )
    assert rows["P1"].properties == {}
    assert rows["P1"].email == "p1@example.com", "the rest of the profile is kept"
    assert rows["P2"].status is S.PENDING


@dataclass
class RawPageCdp:
    """The sandbox CDP, except for the named segments, whose page is the given raw body."""

    inner: SandboxCdp
    bodies: dict[str, bytes]

    def segment_pages(self, integration: IntegrationRef, segment_id: str) -> Iterator[ProfilePage]:
        body = self.bodies.get(segment_id)
        if body is None:
            yield from self.inner.segment_pages(integration, segment_id)
            return
        transport = httpx.MockTransport(
            lambda _request: httpx.Response(
                200, content=body, headers={"content-type": "application/vnd.api+json"}
            )
        )
        with KlaviyoClient("pk_test", transport=transport) as client:
            yield from client.iter_segment_profiles(segment_id)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nests deeper"),
        (b"<html>maintenance</html>", "not JSON"),
        (b'{"data": {"id": "x"}}', "no data list"),
        (b'{"data": [], "links": ["next"]}', "links is a list"),
    ],
    ids=["deep-nesting", "not-json", "no-data-list", "links-not-object"],
)
def test_a_page_the_client_cannot_read_fails_that_campaign_only(
    world: World, body: bytes, says: str
) -> None:
    org = world.organization()
    broken = world.campaign(org, "Win-back", segment="SEG-BAD")
    fine = world.campaign(org, "Welcome", segment="SEG-OK")
    world.segment("SEG-OK", [person("P1")])
    cdp = RawPageCdp(world.cdp, {"SEG-BAD": body})

    result = sync_organization(world.sessions, cdp, org, SETTINGS)

    by_id = {r.campaign_id: r for r in result.campaigns}
    assert by_id[broken].outcome is Outcome.FAILED
    assert by_id[broken].campaign_name == "Win-back"
    assert (by_id[broken].detail or "").startswith("reading the segment failed: klaviyo: ")
    assert says in (by_id[broken].detail or "")
    assert by_id[fine].outcome is Outcome.SYNCED
    assert world.statuses(fine) == {"P1": S.PENDING}
    assert [p.campaign_id for p in result.problems] == [broken]


@dataclass
class CrashingCdp:
    """Raises what nobody mapped (a bug in a client) for the named segment."""

    inner: SandboxCdp
    crashing: str

    def segment_pages(self, integration: IntegrationRef, segment_id: str) -> Iterator[ProfilePage]:
        if segment_id == self.crashing:
            raise KeyError("attributes")
        yield from self.inner.segment_pages(integration, segment_id)


def test_an_unexpected_exception_fails_that_campaign_only(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    org = world.organization()
    broken = world.campaign(org, "Win-back", segment="SEG-BUG")
    fine = world.campaign(org, "Welcome", segment="SEG-OK")
    world.segment("SEG-BUG", [person("B1")])
    world.segment("SEG-OK", [person("P1")])

    with caplog.at_level(logging.ERROR, logger="mail_pipeline.services.sync"):
        result = sync_organization(world.sessions, CrashingCdp(world.cdp, "SEG-BUG"), org, SETTINGS)

    by_id = {r.campaign_id: r for r in result.campaigns}
    assert by_id[broken].outcome is Outcome.FAILED
    assert by_id[broken].detail == "the sync failed unexpectedly: KeyError: 'attributes'"
    assert by_id[fine].outcome is Outcome.SYNCED
    assert world.statuses(fine) == {"P1": S.PENDING}
    (record,) = [r for r in caplog.records if r.exc_info]
    assert f"campaign {broken} (Win-back)" in record.getMessage()
    # the crashed sync released its lock
    with unit_of_work(world.db_url) as session:
        assert CampaignLocks(session).acquire(broken, "next", timedelta(minutes=1)) is not None


# -- errors found at sync can be fixed ------------------------------------------------------


def test_a_resync_decides_again_the_profiles_it_rejected(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment(
        "SEG",
        [
            person("P1", email="ann@example.com", region=None),
            person("P2", email="ann@example.com"),
            {"type": "profile", "id": "P3", "attributes": {"email": ["p3@example.com"]}},
            person("P4", country="ZZ"),
        ],
    )
    first = sync(world, campaign)
    assert first.created == Counter({S.ERROR: 3, S.SKIPPED: 1})
    assert world.recipients(campaign)["P1"].status_reason == "US address is missing the state"
    with unit_of_work(world.db_url) as session:  # P4 asks not to be mailed meanwhile
        session.add(BlocklistEntry(organization_id=org, kind="email", value="p4@example.com"))

    world.segment(
        "SEG",
        [
            person("P1", email="ann@example.com", region="new york", zip_code="10017 1234"),
            person("P2", email="ann@example.com"),
            person("P3"),
            person("P4"),
        ],
    )
    second = sync(world, campaign)

    assert second.created == Counter()
    assert second.redecided == Counter({S.PENDING: 2, S.BLACKLISTED: 1})
    assert second.detail == (
        "recipients rejected at an earlier sync, decided again: Blacklisted 1, Pending 2"
    )
    rows = world.recipients(campaign)
    p1 = rows["P1"]
    assert (p1.status, p1.status_reason, p1.error_from_status) == (S.PENDING, None, None)
    assert (p1.region, p1.postal_code, p1.country) == ("NY", "10017-1234", "US")
    assert (rows["P3"].status, rows["P3"].email, rows["P3"].first_name) == (
        S.PENDING,
        "p3@example.com",
        "Ann",
    )
    assert (rows["P4"].status, rows["P4"].status_reason) == (
        S.BLACKLISTED,
        "email address is on the blocklist",
    )
    assert (rows["P2"].status, rows["P2"].status_reason) == (
        S.SKIPPED,
        "duplicate of profile P1 (same email)",
    )
    # nothing left to decide again
    third = sync(world, campaign)
    assert third.created == Counter() and third.redecided == Counter()


def test_a_profile_still_bad_stays_error_with_the_fresh_reason(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1", region=None)])
    sync(world, campaign)

    world.segment("SEG", [person("P1", region="NY", zip_code="1001")])
    second = sync(world, campaign)
    again = sync(world, campaign)

    assert second.redecided == Counter({S.ERROR: 1})
    row = world.recipients(campaign)["P1"]
    assert (row.status, row.status_reason, row.region, row.error_from_status) == (
        S.ERROR,
        "US address has an invalid ZIP code (5 digits or ZIP+4)",
        "NY",
        None,
    )
    assert again.redecided == Counter(), "an unchanged profile is not rewritten"


def test_a_resync_leaves_errors_from_later_stages_and_uploads_alone(
    world: World, add_recipients: Any
) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    (proofing,) = add_recipients(
        campaign,
        1,
        status=S.ERROR,
        error_from_status=S.PROOFING,
        status_reason="the design is invalid",
        external_profile_id="P1",
    )
    (uploaded,) = add_recipients(
        campaign,
        1,
        status=S.ERROR,
        status_reason="bad row",
        source="upload",
        external_profile_id="P2",
    )
    world.segment("SEG", [person("P1"), person("P2"), person("P3")])

    result = sync(world, campaign)

    assert result.created == Counter({S.PENDING: 1}) and result.redecided == Counter()
    rows = world.recipients(campaign)
    assert (rows["P1"].status, rows["P1"].status_reason) == (S.ERROR, "the design is invalid")
    assert (rows["P2"].status, rows["P2"].status_reason) == (S.ERROR, "bad row")
    assert {rows["P1"].id, rows["P2"].id} == {proofing, uploaded}


# -- addresses are judged at sync -----------------------------------------------------------


@pytest.mark.parametrize("spelling", ["U.S.A", "United States.", "The United States", "america"])
def test_spellings_of_the_united_states_are_accepted(world: World, spelling: str) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1", country=spelling)])

    sync(world, campaign)

    row = world.recipients(campaign)["P1"]
    assert (row.status, row.country) == (S.PENDING, "US")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"country": "ZZ"}, "unknown country (not an ISO 3166 country name or code)"),
        ({"region": None}, "US address is missing the state"),
        ({"region": "Calif"}, "US address has an unknown state"),
        ({"zip_code": "ABCDE"}, "US address has an invalid ZIP code (5 digits or ZIP+4)"),
        ({"country": "France", "region": None, "zip_code": "75001"}, "no printer mails to FR"),
        ({"country": "Canada", "region": "ON", "zip_code": "K1A 0B1"}, "no printer mails to CA"),
        (
            {"line1": "Apartment 12B, The Old Granary Building, 1450 Long Meadow Road"},
            "address lines 1 and 2 are 62 characters together; Lob takes at most 50",
        ),
        ({"first_name": None, "last_name": None}, "address is missing name"),
        (
            {"country": "UK", "region": None, "zip_code": "12345"},
            "UK address has an invalid postcode",
        ),
    ],
    ids=[
        "ZZ",
        "no-state",
        "unknown-state",
        "bad-zip",
        "France",
        "Canada",
        "lob-limit",
        "no-name",
        "bad-postcode",
    ],
)
def test_an_address_a_printer_would_refuse_is_an_error_at_sync(
    world: World, overrides: dict[str, Any], reason: str
) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    world.segment("SEG", [person("P1", **overrides), person("P2")])

    result = sync(world, campaign)

    rows = world.recipients(campaign)
    assert result.created == Counter({S.ERROR: 1, S.PENDING: 1})
    assert (rows["P1"].status, rows["P1"].status_reason) == (S.ERROR, reason)
    assert rows["P1"].error_from_status is None


def test_a_missing_country_is_the_organizations_home_country(world: World) -> None:
    us_org = world.organization()
    uk_org = world.organization(country="GB")
    us = world.campaign(us_org, "Win-back", segment="SEG-US")
    uk = world.campaign(uk_org, "Lapsed", segment="SEG-UK")
    world.segment(
        "SEG-US",
        [
            person("P1", country=None, region="ca", zip_code="94107"),
            person("P2", country=None, region=None, zip_code="SW1A 1AA"),
        ],
    )
    world.segment("SEG-UK", [person("G1", country=None, region=None, zip_code="bs14dj")])

    sync(world, us)
    sync(world, uk)

    rows = world.recipients(us)
    assert (rows["P1"].status, rows["P1"].country, rows["P1"].region) == (S.PENDING, "US", "CA")
    assert (rows["P2"].status, rows["P2"].status_reason) == (
        S.ERROR,
        "US address is missing the state (no country given; the organization's home "
        "country US was assumed)",
    )
    g1 = world.recipients(uk)["G1"]
    assert (g1.status, g1.country, g1.postal_code) == (S.PENDING, "GB", "BS1 4DJ")


def test_the_organizations_printer_preference_decides_the_limits(world: World) -> None:
    org = world.organization(printer_preference="intelliprint")
    campaign = world.campaign(org, "Win-back", segment="SEG")
    long_line = "Apartment 12B, The Old Granary Building, 1450 Long Meadow Road"
    world.segment("SEG", [person("P1", line1=long_line)])

    sync(world, campaign)

    assert world.statuses(campaign) == {"P1": S.PENDING}


def test_a_profile_id_no_row_can_hold_is_reported_without_repeating_it(world: World) -> None:
    org = world.organization()
    campaign = world.campaign(org, "Win-back", segment="SEG")
    long_id = "01" + "X" * 200
    world.segment("SEG", [person(long_id), person("01\x00NUL"), person("P1")])

    result = sync(world, campaign)

    assert result.outcome is Outcome.SYNCED
    assert world.statuses(campaign) == {"P1": S.PENDING}
    assert result.rejected == [
        "Klaviyo a profile without a usable id is malformed: the profile id is 202 characters "
        "long; at most 128 fit",
        "Klaviyo a profile without a usable id is malformed: the profile id contains a NUL "
        "character (U+0000)",
    ]

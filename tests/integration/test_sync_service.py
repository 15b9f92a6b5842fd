"""The recipient sync service (seed 001 §1) against the Klaviyo sandbox, on SQLite and (with
MAIL_PIPELINE_TEST_DATABASE_URL) PostgreSQL.

Profiles are seeded in the sandbox Klaviyo account and read by the real Klaviyo client through
``SandboxCdp``; every assertion is on what the sync reports *and* what it wrote.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from mail_pipeline.db.campaigns import IntegrationRef
from mail_pipeline.db.engine import SessionFactory, unit_of_work
from mail_pipeline.db.locks import CampaignLocks
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
    ) -> int:
        n = next(self._n)
        with unit_of_work(self.db_url) as session:
            org = Organization(name=f"Brand {n}", slug=f"brand-{n}", country="US", status=status)
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
    city: str | None = "New York",
    zip_code: str | None = "10017",
    country: str | None = "United States",
    address: bool = True,
) -> dict[str, Any]:
    """A Klaviyo profile resource with a US address unless ``address=False``."""
    location = None
    if address:
        location = {
            "address1": line1 or f"1 {pid} Street",
            "city": city,
            "region": "NY",
            "zip": zip_code,
            "country": country,
        }
    email = email if email is not None else f"{pid.lower()}@example.com"
    return profile_resource(pid, email, "Ann", "Lee", location)


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
        "Klaviyo a profile without an id is malformed: the resource has no id"
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
    assert rows["P1"].status_reason == "profile P1: unknown country 'Atlantis'"
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

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

from sqlalchemy import func, select

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import BlocklistEntry, Campaign, Organization
from mail_pipeline.domain.campaigns import CampaignMode
from mail_pipeline.domain.profiles import Destination, judge_profile
from mail_pipeline.integrations.klaviyo.models import CdpProfile
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData, demo_profiles
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.services.demo import seed_demo


def _segment(store: SandboxStore, segment_id: str) -> list[dict]:
    from mail_pipeline.integrations.klaviyo.sandbox_data import segment_collection

    return [
        doc["resource"] for _, _, doc in store.scan(segment_collection(segment_id), limit=10_000)
    ]


def test_demo_seeds_two_brands_with_the_awkward_cases(db_url: str) -> None:
    store = SandboxStore()
    with unit_of_work(db_url) as session:
        summary = seed_demo(session, store, today=date(2026, 11, 23))
    assert summary.organizations == 2 and summary.campaigns == 5
    assert 300 <= summary.profiles <= 400

    with unit_of_work(db_url) as session:
        countries = set(session.scalars(select(Organization.country)))
        modes = Counter(session.scalars(select(Campaign.campaign_mode)))
        no_segment = session.scalars(
            select(Campaign.name).where(Campaign.provider_segment_id.is_(None))
        ).all()
        blocked = set(session.scalars(select(BlocklistEntry.value)))
    assert countries == {"US", "GB"}
    assert modes == {CampaignMode.AUTOMATED: 2, CampaignMode.ONE_OFF: 3}
    assert no_segment == ["VIP list upload"]

    winback = _segment(store, "SEG-JT-WINBACK")
    emails = Counter(p["attributes"]["email"] for p in winback)
    assert sum(1 for p in winback if not p["attributes"]["location"]["address1"]) == 10
    assert sum(n - 1 for n in emails.values()) == 6, "six people appear twice"
    assert len(blocked & set(emails)) == 5
    spring_ids = {p["id"] for p in _segment(store, "SEG-JT-SPRING")}
    assert len(spring_ids & {p["id"] for p in winback}) == 15
    assert set(KlaviyoSandboxData(store).segment_ids()) == {
        "SEG-JT-WINBACK",
        "SEG-JT-SPRING",
        "SEG-BH-LAPSED",
        "SEG-BH-SUMMER",
    }


def test_seeding_twice_changes_nothing(db_url: str) -> None:
    store = SandboxStore()
    with unit_of_work(db_url) as session:
        first = seed_demo(session, store)
    before = _segment(store, "SEG-BH-LAPSED")
    with unit_of_work(db_url) as session:
        second = seed_demo(session, store)
    with unit_of_work(db_url) as session:
        assert session.scalar(select(func.count()).select_from(Organization)) == 2
        assert session.scalar(select(func.count()).select_from(Campaign)) == 5
        assert (
            session.scalar(select(func.count()).select_from(BlocklistEntry))
            == first.blocklist_entries
        )
    assert second.blocklist_entries == 0
    assert _segment(store, "SEG-BH-LAPSED") == before


def _problems(resources: list[dict], home_country: str) -> list[str]:
    destination = Destination(home_country=home_country)
    judged = [judge_profile(CdpProfile.from_jsonapi(r).to_data(), destination) for r in resources]
    return [j.problem for j in judged if j.problem]


def test_the_demo_has_three_profiles_that_fail_at_sync_with_a_reason(db_url: str) -> None:
    store = SandboxStore()
    with unit_of_work(db_url) as session:
        seed_demo(session, store, today=date(2026, 11, 23))

    problems = {
        segment: _problems(_segment(store, segment), "GB" if "-BH-" in segment else "US")
        for segment in KlaviyoSandboxData(store).segment_ids()
    }

    assert {segment: len(found) for segment, found in problems.items()} == {
        "SEG-JT-WINBACK": 3,
        "SEG-JT-SPRING": 0,
        "SEG-BH-LAPSED": 0,
        "SEG-BH-SUMMER": 0,
    }
    assert set(problems["SEG-JT-WINBACK"]) <= {
        "unknown country (not an ISO 3166 country name or code)",
        "address lines 1 and 2 are 62 characters together; Lob takes at most 50",
    }


def test_generated_sandbox_profiles_are_all_mailable() -> None:
    assert _problems(demo_profiles(200, seed=1), "US") == []
    assert _problems(demo_profiles(200, seed=2, country="GB"), "GB") == []


def test_the_demo_vip_list_commits_at_once_for_its_trusted_brand(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time
    from functools import partial

    from mail_pipeline.integrations.uploads import LocalUploadFolder
    from mail_pipeline.services.demo import demo_upload
    from mail_pipeline.services.uploads import ingest_upload

    with unit_of_work(db_url) as session:
        assert demo_upload(session) is None  # nothing to upload to before the demo exists
        seed_demo(session, SandboxStore(), today=date(2026, 11, 23))
    with unit_of_work(db_url) as session:
        upload = demo_upload(session)
    assert upload is not None
    name, data = upload
    (tmp_path / name).parent.mkdir(parents=True)
    (tmp_path / name).write_bytes(data)

    outcome = ingest_upload(
        partial(unit_of_work, db_url),
        LocalUploadFolder(tmp_path, clock=lambda: time.time() + 60),
        name,
        datetime(2026, 11, 23, 15, tzinfo=UTC),
    )

    assert (outcome.status, outcome.written, outcome.rows_skipped) == ("committed", 4, 1)

"""Address enrichment on a real database (SQLite, or PostgreSQL when
MAIL_PIPELINE_TEST_DATABASE_URL is set) against the sandbox Faraday: matched recipients get
their address and become Pending, unmatched ones end Skipped with why, failed and overdue
batches return their recipients, answers are cached for 90 days, and a crash between the
vendor's acceptance and our record never makes a second batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
import sqlalchemy as sa

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import EnrichmentBatch, EnrichmentCacheEntry, Recipient
from mail_pipeline.domain.address_enrichment import (
    BATCH_TIMEOUT,
    CACHE_TTL,
    MAX_ATTEMPTS,
    NO_EMAIL,
    NO_MATCH,
    NOT_COVERED,
    identity_key,
)
from mail_pipeline.domain.addresses import email_key
from mail_pipeline.domain.recipients import RecipientStatus as S
from mail_pipeline.integrations.enrichment.base import BatchPoll, BatchState, IdentityRow
from mail_pipeline.integrations.enrichment.faraday import FaradayEnricher
from mail_pipeline.integrations.enrichment.sandbox import (
    SANDBOX_API_KEY,
    FaradaySandbox,
    sandbox_matches,
)
from mail_pipeline.integrations.errors import VendorUnavailable
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.services.address_enrichment import (
    delete_expired_cache,
    poll_batches,
    start_batches,
)

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 01:00 in New York


@pytest.fixture
def sandbox(tmp_path) -> FaradaySandbox:  # type: ignore[no-untyped-def]
    return FaradaySandbox(SandboxStore(tmp_path / "sandbox.sqlite"), ready_after_seconds=0)


@pytest.fixture
def enricher(sandbox: FaradaySandbox) -> FaradayEnricher:
    return FaradayEnricher(SANDBOX_API_KEY, transport=sandbox)


def _enrichable(db_url: str, add_recipients, campaign_id: int, n: int, **fields) -> list[int]:  # type: ignore[no-untyped-def]
    ids = add_recipients(campaign_id, n, S.ADDRESS_ENRICHABLE, last_name="Doe", **fields)
    with unit_of_work(db_url) as session:
        for recipient in session.scalars(sa.select(Recipient).where(Recipient.id.in_(ids))):
            recipient.email_key = email_key(recipient.email)
    return ids


def _rows(db_url: str, ids: Sequence[int]) -> list[Recipient]:
    with unit_of_work(db_url) as session:
        rows = list(
            session.scalars(
                sa.select(Recipient).where(Recipient.id.in_(ids)).order_by(Recipient.id)
            )
        )
        session.expunge_all()
        return rows


def _batches(db_url: str) -> list[EnrichmentBatch]:
    with unit_of_work(db_url) as session:
        rows = list(session.scalars(sa.select(EnrichmentBatch).order_by(EnrichmentBatch.id)))
        session.expunge_all()
        return rows


def test_matched_recipients_become_pending_with_their_address_and_the_rest_skipped(
    db_url: str,
    make_campaign: Callable[..., tuple[int, int]],
    add_recipients,
    enricher,  # type: ignore[no-untyped-def]
) -> None:
    _org, campaign = make_campaign()
    ids = _enrichable(db_url, add_recipients, campaign, 40)
    sessions = partial(unit_of_work, db_url)

    started = start_batches(sessions, enricher, provider="faraday", now=NOW)
    assert (started.batches_started, started.claimed, started.submitted) == (1, 40, 40)
    assert {r.status for r in _rows(db_url, ids)} == {S.ADDRESS_ENRICHING}

    polled = poll_batches(sessions, enricher, now=NOW + timedelta(minutes=2))
    rows = _rows(db_url, ids)
    expected = {r.id for r in rows if sandbox_matches(r.email)}
    assert 0 < len(expected) < 40
    assert {r.id for r in rows if r.status == S.PENDING} == expected
    for row in rows:
        if row.id in expected:
            assert row.address1 and row.city and row.region and row.country == "US"
            assert row.postal_code and len(row.postal_code) >= 5 and row.address_key
        else:
            assert (row.status, row.status_reason) == (S.SKIPPED, NO_MATCH)
            assert row.address1 is None
    assert (polled.matched, polled.unmatched, polled.batches_completed) == (
        len(expected),
        40 - len(expected),
        1,
    )
    [batch] = _batches(db_url)
    assert (batch.status, batch.matched_count, batch.unmatched_count) == (
        "completed",
        len(expected),
        40 - len(expected),
    )
    # Nothing is open any more: another poll changes nothing.
    again = poll_batches(sessions, enricher, now=NOW + timedelta(minutes=4))
    assert (again.matched, again.unmatched, again.batches_completed) == (0, 0, 0)


def test_answers_are_cached_per_identity_and_reused_before_a_new_submission(
    db_url: str,
    make_campaign,
    add_recipients,
    enricher,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    org, campaign = make_campaign()
    first = _enrichable(db_url, add_recipients, campaign, 10)
    sessions = partial(unit_of_work, db_url)
    start_batches(sessions, enricher, provider="faraday", now=NOW)
    poll_batches(sessions, enricher, now=NOW)
    # The same people again (another campaign of the organization): no vendor call.
    with unit_of_work(db_url) as session:
        people = [
            (r.email, r.email_key)
            for r in session.scalars(sa.select(Recipient).where(Recipient.id.in_(first)))
        ]
        keys = {row.lookup_key for row in session.scalars(sa.select(EnrichmentCacheEntry))}
    assert keys == {identity_key(org, key) for _email, key in people}
    assert not any("@" in key for key in keys)  # never the raw email
    targets = sandbox.count("targets")
    with unit_of_work(db_url) as session:
        rows = [
            {
                "organization_id": org,
                "campaign_id": campaign,
                "status": S.ADDRESS_ENRICHABLE,
                "email": email,
                "email_key": key,
                "first_name": "R",
                "last_name": "Doe",
                "external_profile_id": f"again-{i}",
            }
            for i, (email, key) in enumerate(people)
        ]
        again = sorted(
            session.execute(sa.insert(Recipient).returning(Recipient.id), rows).scalars()
        )
    later = NOW + timedelta(days=1)
    outcome = start_batches(sessions, enricher, provider="faraday", now=later)
    assert (outcome.from_cache, outcome.submitted) == (10, 0)
    assert sandbox.count("targets") == targets
    before = {r.email: r.status for r in _rows(db_url, first)}
    assert {r.email: r.status for r in _rows(db_url, again)} == before

    # After 90 days the cache is deleted by the daily job, and not used before that either.
    assert delete_expired_cache(sessions, now=NOW + CACHE_TTL - timedelta(minutes=1)) == 0
    assert delete_expired_cache(sessions, now=NOW + CACHE_TTL + timedelta(minutes=1)) == 10


def test_a_recipient_without_an_email_is_skipped_with_why(
    db_url: str,
    make_campaign,
    add_recipients,
    enricher,  # type: ignore[no-untyped-def]
) -> None:
    _org, campaign = make_campaign()
    [lonely] = add_recipients(campaign, 1, S.ADDRESS_ENRICHABLE, email=None)
    outcome = start_batches(partial(unit_of_work, db_url), enricher, provider="faraday", now=NOW)
    [row] = _rows(db_url, [lonely])
    assert (row.status, row.status_reason) == (S.SKIPPED, NO_EMAIL)
    assert (outcome.unmatched, outcome.submitted, outcome.batches_completed) == (1, 0, 1)


class Flaky:
    """An enricher whose batches fail, never finish, or whose answer to a submission is
    lost after the vendor accepted it (then a working client on the same sandbox)."""

    def __init__(self, inner: FaradayEnricher, mode: str) -> None:
        self.inner, self.mode, self.submitted = inner, mode, 0

    def submit(self, batch_name: str, people: Sequence[IdentityRow]) -> str:
        external = self.inner.submit(batch_name, people)
        self.submitted += 1
        if self.mode == "lost":
            raise VendorUnavailable("faraday", "the answer never arrived")
        return external

    def poll(self, batch_id: str) -> BatchPoll:
        if self.mode == "failed":
            return BatchPoll(BatchState.FAILED, reason="dataset could not be read")
        return BatchPoll(BatchState.RUNNING)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("mode", ["failed", "never"])
def test_a_failed_or_overdue_batch_returns_its_recipients_and_a_third_failure_gives_up(
    db_url: str,
    make_campaign,
    add_recipients,
    enricher,
    mode: str,  # type: ignore[no-untyped-def]
) -> None:
    _org, campaign = make_campaign()
    ids = _enrichable(db_url, add_recipients, campaign, 5)
    sessions = partial(unit_of_work, db_url)
    flaky = Flaky(enricher, mode)
    moment = NOW
    for attempt in range(1, MAX_ATTEMPTS + 1):
        start_batches(sessions, flaky, provider="faraday", now=moment)
        assert {r.status for r in _rows(db_url, ids)} == {S.ADDRESS_ENRICHING}
        if mode == "never":
            # Still running before the deadline: nothing moves.
            poll_batches(sessions, flaky, now=moment + BATCH_TIMEOUT - timedelta(seconds=1))
            assert {r.status for r in _rows(db_url, ids)} == {S.ADDRESS_ENRICHING}
            moment += BATCH_TIMEOUT
        outcome = poll_batches(sessions, flaky, now=moment)
        rows = _rows(db_url, ids)
        if attempt < MAX_ATTEMPTS:
            assert outcome.returned == 5
            assert {r.status for r in rows} == {S.ADDRESS_ENRICHABLE}
        else:
            assert outcome.gave_up == 5
            assert {r.status for r in rows} == {S.SKIPPED}
            assert all("failed 3 times" in (r.status_reason or "") for r in rows)
        moment += timedelta(hours=6)
    statuses = [b.status for b in _batches(db_url)]
    assert statuses == ["failed" if mode == "failed" else "timed_out"] * MAX_ATTEMPTS


def test_a_lost_answer_after_the_vendor_accepted_the_batch_makes_no_second_target(
    db_url: str,
    make_campaign,
    add_recipients,
    enricher,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    _org, campaign = make_campaign()
    ids = _enrichable(db_url, add_recipients, campaign, 8)
    sessions = partial(unit_of_work, db_url)
    lost = start_batches(sessions, Flaky(enricher, "lost"), provider="faraday", now=NOW)
    assert list(lost.failed) == [_org]
    [batch] = _batches(db_url)
    assert batch.status == "claimed" and sandbox.count("targets") == 1
    # The next poll submits it again (finding the same target), then applies it.
    poll_batches(sessions, enricher, now=NOW)
    assert sandbox.count("targets") == 1
    poll_batches(sessions, enricher, now=NOW)
    assert {r.status for r in _rows(db_url, ids)} <= {S.PENDING, S.SKIPPED}
    assert _batches(db_url)[0].status == "completed"


def test_an_organization_outside_the_vendors_countries_has_its_recipients_skipped_with_why(
    db_url: str,
    make_campaign,
    add_recipients,
    enricher,
    sandbox,  # type: ignore[no-untyped-def]
) -> None:
    _org, campaign = make_campaign(country="GB")
    ids = _enrichable(db_url, add_recipients, campaign, 4)
    outcome = start_batches(partial(unit_of_work, db_url), enricher, provider="faraday", now=NOW)
    assert (outcome.not_covered, outcome.batches_started) == (4, 0)
    assert sandbox.count("targets") == 0 and not _batches(db_url)
    rows = _rows(db_url, ids)
    assert {r.status for r in rows} == {S.SKIPPED}
    assert {r.status_reason for r in rows} == {NOT_COVERED.format(country="GB")}

"""Queue faults against the status consumer, on SQS (moto) and on the local queue, on the app
database in use (SQLite, or PostgreSQL when configured).

The guarantee under every fault: each status update is applied exactly once (one event row
per printer event, the piece and the recipient moved once, no timestamp rewritten by a
replay), and no message is deleted before its effect is committed (a :class:`DeleteWatch`
checks each delete against the committed rows, through its own connection). A message that
cannot be processed is never lost: it stays in the queue or is parked in the DLQ.

Faults (how each is injected: ``tests/reliability/queue_faults_support.py``):

- duplicate deliveries, in one pass and across passes;
- a visibility timeout running out mid-batch, so that a second consumer receives the same
  messages while the first has not applied, not committed, or not deleted them;
- a message that kills every run that handles it, redriven to the DLQ after the maximum
  number of receives;
- the DLQ unavailable when the consumer parks a message;
- SQS throttling and 5xx on receive and on delete, for a moment (botocore's retries absorb
  it) or for good (the consumer sees the typed error), and answers lost after SQS acted; for
  the local queue, its file locked by another process (briefly: the busy timeout waits; for
  good: the operation gives up);
- the run dying between applying and committing, and between committing and deleting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import moto.sqs.models
import pytest
from botocore.retries.standard import ExponentialBackoff
from moto import mock_aws
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.mailpiece_status import MailpieceStatusGateway, NewEvent
from mail_pipeline.integrations.errors import VendorUnavailable
from mail_pipeline.integrations.queues.base import QueueMessage
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.queues.local_db import QueueDatabase
from mail_pipeline.integrations.queues.sqs import SqsQueue
from mail_pipeline.integrations.queues.sqs_setup import ensure_queue_with_dlq, make_sqs_client
from mail_pipeline.services.status_tracking import StatusRunResult
from tests.reliability.queue_faults_support import (
    INTERNAL_ERROR,
    MAX_RECEIVES,
    PIECES,
    THROTTLED,
    UNAVAILABLE,
    DeleteWatch,
    FakeClock,
    LocalFaults,
    SqsFaults,
    WorkerKilled,
    World,
    assert_applied_once,
    assert_nothing_applied,
    make_mail,
    snapshot,
)
from tests.signed_webhooks import lob_event, lob_message

MESSAGES = 2 * PIECES
#: botocore's standard mode waits 1 s x 2^n (jittered) after a throttling error and 50 ms x
#: 2^n after others; the suite shortens the first to the second. Which errors are retried,
#: and how many times, stays botocore's.
FAST_BACKOFF = {"throttling_base_scale": 0.05, "non_throttling_base_scale": 0.05}


@pytest.fixture(params=["sqs", "local"])
def world(
    request: pytest.FixtureRequest,
    db_url: str,
    make_campaign: Any,
    add_recipients: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    mail = make_mail(db_url, make_campaign, add_recipients)
    clock = FakeClock(time.time())
    watch = DeleteWatch(mail)
    if request.param == "sqs":
        monkeypatch.setattr(moto.sqs.models, "unix_time", clock)
        monkeypatch.setattr(moto.sqs.models, "unix_time_millis", clock.millis)
        monkeypatch.setattr(ExponentialBackoff, "_DEFAULT_BACKOFF_CONFIG", FAST_BACKOFF)
        with mock_aws():
            client = make_sqs_client(
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            url, dlq_url = ensure_queue_with_dlq(
                client, "mail-status", max_receive_count=MAX_RECEIVES, visibility_timeout=30
            )
            yield World(
                "sqs",
                mail,
                clock,
                watch,
                # As the SqsQueues resource builds it: the DLQ found by the redrive policy.
                make_queue=lambda: SqsQueue(url, client=client),
                sqs=SqsFaults(client),
                client=client,
                queue_url=url,
                dlq_url=dlq_url,
            )
        return
    path = tmp_path / "queues.sqlite"
    local = World(
        "local",
        mail,
        clock,
        watch,
        make_queue=lambda: LocalQueue(
            QueueDatabase(path),
            "mail-status",
            visibility_timeout=30,
            max_receive_count=MAX_RECEIVES,
            clock=clock,
        ),
        local=LocalFaults(path),
    )
    yield local
    local.close()


def stale_delete_failures(world: World) -> int:
    """Failures of a delete made with a receipt handle that a later receive replaced: the local
    queue refuses the stale handle; moto (like SQS, which may) deletes with it."""
    return MESSAGES if world.kind == "local" else 0


def assert_every_delete_after_commit(world: World) -> None:
    assert world.watch.deleted, "nothing was deleted: the watch saw no delete"
    assert world.watch.early == []


# -- duplicate deliveries ----------------------------------------------------------------------


def test_duplicate_deliveries_apply_each_update_once(world: World) -> None:
    """Every webhook twice in one pass (one of them three times), then all of them again in a
    later pass, newest first: one event row each, each piece and recipient moved once, and the
    replay changes no row, no timestamp."""
    mail = world.mail
    world.send([*mail.messages, *mail.messages, mail.messages[-1]])

    first = world.run()

    assert first == StatusRunResult(
        received=2 * MESSAGES + 1,
        updates_applied=MESSAGES,
        events_duplicated=MESSAGES + 1,
        pieces_advanced=PIECES,
        recipients_received=PIECES,
        messages_deleted=2 * MESSAGES + 1,
    )
    applied = assert_applied_once(mail)

    world.send(mail.messages[::-1])
    again = world.run()

    assert again == StatusRunResult(
        received=MESSAGES, events_duplicated=MESSAGES, messages_deleted=MESSAGES
    )
    assert snapshot(mail.db_url) == applied
    world.expire()
    assert world.held() == 0
    assert world.dead_letters() == []
    assert_every_delete_after_commit(world)


# -- a visibility timeout expiring mid-batch -------------------------------------------------------


class Stalls:
    """A sessions factory for the first consumer that calls ``at(<moment>)`` before its
    transaction begins, after its updates are applied (before the commit) and after the
    commit (before the deletes)."""

    def __init__(self, db_url: str, at: Callable[[str], None]) -> None:
        self.db_url = db_url
        self.at = at

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        self.at("before_apply")
        with unit_of_work(self.db_url) as session:
            yield session
            session.flush()
            self.at("before_commit")
        self.at("after_commit")


@pytest.mark.parametrize("moment", ["before_apply", "before_commit", "after_commit"])
def test_a_visibility_timeout_expiring_mid_batch_applies_each_update_once(
    world: World, moment: str
) -> None:
    """The first consumer stalls at ``moment`` until its visibility timeout is over; a second
    consumer receives the same messages, applies and deletes them. ``before_commit``: the
    second one runs in a thread alongside, and its transaction waits for the first one's row
    locks (PostgreSQL) or write lock (SQLite), then finds the events recorded. Whatever the
    moment, one consumer applies each update and the other finds it recorded; the first
    consumer's late deletes, with handles the second receive replaced, delete nothing that was
    not applied."""
    mail = world.mail
    world.send(mail.messages)
    received_all = threading.Event()
    first_done = threading.Event()
    second: list[Future[StatusRunResult]] = []
    pool = ThreadPoolExecutor(max_workers=1)

    def second_consumer() -> StatusRunResult:
        def on_receive(messages: list[QueueMessage]) -> None:
            if not messages:
                received_all.set()

        def after_the_first() -> None:
            # Alongside, its deletes wait for the first consumer's (one at a time on moto).
            if moment == "before_commit":
                assert first_done.wait(60), "the first consumer did not finish in time"

        return world.run(world.consumer(on_receive, after_the_first))

    def stalled(at: str) -> None:
        if at != moment:
            return
        world.expire()
        second.append(pool.submit(second_consumer))
        if moment == "before_commit":
            assert received_all.wait(60), "the second consumer did not receive in time"
        else:
            second[0].result(timeout=60)

    try:
        first = world.run(sessions=Stalls(mail.db_url, stalled))
        first_done.set()
        (other,) = (future.result(timeout=60) for future in second)
    finally:
        first_done.set()
        pool.shutdown(wait=True)

    applier, finder = (other, first) if moment == "before_apply" else (first, other)
    assert (applier.received, finder.received) == (MESSAGES, MESSAGES)
    assert (applier.updates_applied, applier.events_duplicated) == (MESSAGES, 0)
    assert (finder.updates_applied, finder.events_duplicated) == (0, MESSAGES)
    assert applier.recipients_received == PIECES
    assert finder.pieces_advanced == finder.recipients_received == 0
    assert first.delete_failures == stale_delete_failures(world)
    assert other.delete_failures == 0
    assert_applied_once(mail)
    world.expire()
    assert world.held() == 0
    assert world.dead_letters() == []
    assert_every_delete_after_commit(world)


# -- a poison message redriven after N receives ------------------------------------------------


POISON_EVENT = "evt_poison"


@contextmanager
def killing_the_run_on(event_id: str) -> Iterator[None]:
    """While open, applying ``event_id`` kills the run (before anything of its pass is
    committed)."""
    record = MailpieceStatusGateway.record_events

    def dies(self: MailpieceStatusGateway, events: list[NewEvent]) -> Any:
        if any(e.provider_event_id == event_id for e in events):
            raise WorkerKilled(f"the worker died applying {event_id}")
        return record(self, events)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MailpieceStatusGateway, "record_events", dies)
        yield


def test_a_message_that_kills_every_run_is_redriven_to_the_dlq_after_max_receives(
    world: World,
) -> None:
    """A webhook whose handling kills the run: each pass dies before its commit, so nothing
    is applied and nothing deleted; the messages come back after the visibility timeout. On
    the receive after the ``MAX_RECEIVES``-th, the redrive policy parks the message in the
    DLQ, and with it the messages that shared its passes (their receive counts rose with
    its). Once the cause is fixed and an operator moves them back, every update is applied
    once."""
    mail = world.mail
    poison = lob_message(
        lob_event(POISON_EVENT, "psc_fault_0", "postcard.in_transit", "2025-03-01T09:00:00Z")
    )
    world.send([*mail.messages, poison])

    with killing_the_run_on(POISON_EVENT):
        for _ in range(MAX_RECEIVES):
            with pytest.raises(WorkerKilled):
                world.run()
            assert_nothing_applied(mail)
            world.expire()
            assert world.held() == MESSAGES + 1
        parked = world.run()

    assert parked.received == 0
    assert world.held() == 0
    dead = world.dead_letters()
    assert sorted(body for body, _ in dead) == sorted([*mail.messages, poison])
    assert {reason for _, reason in dead} == {None}
    assert_nothing_applied(mail)
    assert world.watch.deleted == []

    # The cause is fixed (the patch is gone); an operator moves the messages back.
    assert world.move_back_from_dlq() == MESSAGES + 1
    result = world.run()

    assert (result.received, result.updates_applied) == (MESSAGES + 1, MESSAGES + 1)
    assert result.messages_deleted == MESSAGES + 1
    assert_applied_once(mail, extra_events={POISON_EVENT})
    world.expire()
    assert world.held() == 0
    assert world.dead_letters() == []
    assert_every_delete_after_commit(world)


# -- the DLQ unavailable ---------------------------------------------------------------------------


def test_a_message_that_cannot_be_parked_stays_in_the_queue_while_the_dlq_is_unavailable(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Rule: a message bound for the DLQ is deleted from the queue only by its move there.
    While the DLQ cannot take it (SQS: the send to the DLQ fails 503 past the retries; local:
    the queue file is locked past the busy timeout) the message stays in the queue, an error
    log says why, ``dead_letter_failures`` counts it, and the rest of the pass is applied and
    deleted as usual. It comes back after the visibility timeout and is parked once the DLQ
    is back."""
    mail = world.mail
    world.send(["not json", *mail.messages])
    world.fail("dead_letter", persistent=True)
    caplog.set_level(logging.ERROR, logger="mail_pipeline.services.status_tracking")

    first = world.run()

    assert (first.received, first.dead_lettered, first.dead_letter_failures) == (
        MESSAGES + 1,
        0,
        1,
    )
    assert (first.updates_applied, first.messages_deleted) == (MESSAGES, MESSAGES)
    applied = assert_applied_once(mail)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name == "mail_pipeline.services.status_tracking" and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 1
    assert "not moved to the DLQ" in errors[0]
    assert ("ServiceUnavailable" if world.kind == "sqs" else "locked") in errors[0]
    assert world.held() == 1
    assert world.dead_letters() == []

    world.expire()  # still unavailable on the next delivery: kept again
    again = world.run()
    assert (again.received, again.dead_lettered, again.dead_letter_failures) == (1, 0, 1)
    assert world.held() == 1

    world.heal()
    world.expire()
    parked = world.run()

    assert (parked.received, parked.dead_lettered, parked.dead_letter_failures) == (1, 1, 0)
    ((body, reason),) = world.dead_letters()
    assert body == "not json"
    assert reason is not None
    assert "not JSON" in reason
    assert world.held() == 0
    assert snapshot(mail.db_url) == applied
    assert_every_delete_after_commit(world)


@pytest.mark.parametrize("world", ["sqs"], indirect=True)
def test_a_dlq_copy_whose_original_was_not_deleted_is_parked_again_never_lost(
    world: World,
) -> None:
    """SQS parks a message in two calls: a copy to the DLQ, then the delete of the original.
    When the delete fails past the retries, the original stays in the queue and the move is
    counted as failed; on its next delivery it is parked again, so the DLQ holds it twice
    (the local queue's move is one transaction: it has nothing to show here)."""
    assert world.sqs is not None
    mail = world.mail
    world.send(["not json", *mail.messages])
    # The first delete of the pass is the dead-letter move's: fail all its attempts.
    world.sqs.fail(
        "DeleteMessageBatch",
        UNAVAILABLE,
        attempts=world.client.meta.config.retries["total_max_attempts"],
        queue_url=world.queue_url,
    )

    first = world.run()

    assert (first.dead_lettered, first.dead_letter_failures) == (0, 1)
    assert (first.updates_applied, first.messages_deleted, first.delete_failures) == (
        MESSAGES,
        MESSAGES,
        0,
    )
    assert world.held() == 1
    world.expire()
    second = world.run()

    assert (second.received, second.dead_lettered, second.dead_letter_failures) == (1, 1, 0)
    assert [body for body, _ in world.dead_letters()] == ["not json", "not json"]
    assert world.held() == 0
    assert_applied_once(mail)
    assert_every_delete_after_commit(world)


# -- throttling and 5xx on receive and delete ------------------------------------------------------


def test_a_receive_throttled_for_a_moment_is_retried(world: World) -> None:
    """SQS throttles two attempts of the first receive: botocore retries it and the pass goes
    on. (Local: the queue file is locked for a moment; the receive waits for it.)"""
    world.send(world.mail.messages)
    world.fail("receive", persistent=False, error=THROTTLED, attempts=2)

    result = world.run()

    assert (result.received, result.updates_applied) == (MESSAGES, MESSAGES)
    assert (result.messages_deleted, result.delete_failures) == (MESSAGES, 0)
    assert_applied_once(world.mail)
    if world.sqs is not None:
        assert world.sqs.count("ReceiveMessage", failed=True) == 2
    else:
        assert world.local is not None
        assert world.local.locked["receive"] == 2
    world.expire()
    assert world.held() == 0
    assert_every_delete_after_commit(world)


def test_a_delete_unavailable_for_a_moment_is_retried(world: World) -> None:
    """SQS answers 503 to two attempts of the delete: botocore retries it, and the messages
    are deleted in the same pass (nothing comes back to be applied again)."""
    world.send(world.mail.messages)
    world.fail("delete", persistent=False, error=UNAVAILABLE, attempts=2)

    result = world.run()

    assert (result.messages_deleted, result.delete_failures) == (MESSAGES, 0)
    applied = assert_applied_once(world.mail)
    if world.sqs is not None:
        assert world.sqs.count("DeleteMessageBatch", failed=True) == 2
    world.expire()
    assert world.held() == 0
    assert world.run().received == 0
    assert snapshot(world.mail.db_url) == applied
    assert_every_delete_after_commit(world)


def test_a_receive_failing_for_good_mid_pass_processes_the_pages_already_received(
    world: World,
) -> None:
    """The first receive works; from the second on, SQS answers 500 past every retry (local:
    the queue file stays locked). The pass stops receiving and processes the page it holds
    (applied, committed, then deleted) instead of leaving it hidden for a visibility timeout;
    the next pass's first receive meets the outage and raises the typed error, so a queue
    that stays down fails the run. The messages never received are applied once when the
    queue is back."""
    world.send(world.mail.messages)
    world.fail("receive", persistent=True, error=INTERNAL_ERROR, skip=1)

    first = world.run()

    assert 0 < first.received < MESSAGES
    assert first.updates_applied == first.messages_deleted == first.received
    assert world.held() == MESSAGES - first.received
    with pytest.raises(VendorUnavailable):
        world.run()
    assert world.held() == MESSAGES - first.received
    world.heal()
    rest = world.run()

    assert (rest.received, rest.updates_applied, rest.messages_deleted) == (
        MESSAGES - first.received,
    ) * 3
    assert_applied_once(world.mail)
    world.expire()
    assert world.held() == 0
    assert_every_delete_after_commit(world)


def test_a_delete_failing_for_good_leaves_harmless_duplicates(world: World) -> None:
    """SQS throttles the delete past every retry (local: the file stays locked). The updates are
    committed; the failure is counted, not raised; the messages come back after the visibility
    timeout and applying them again changes no row and no timestamp."""
    world.send(world.mail.messages)
    world.fail("delete", persistent=True, error=THROTTLED)

    first = world.run()

    assert (first.updates_applied, first.recipients_received) == (MESSAGES, PIECES)
    assert (first.messages_deleted, first.delete_failures) == (0, MESSAGES)
    applied = assert_applied_once(world.mail)
    world.heal()
    world.expire()
    again = world.run()

    assert again == StatusRunResult(
        received=MESSAGES, events_duplicated=MESSAGES, messages_deleted=MESSAGES
    )
    assert snapshot(world.mail.db_url) == applied
    world.expire()
    assert world.held() == 0
    assert_every_delete_after_commit(world)


@pytest.mark.parametrize("world", ["sqs"], indirect=True)
def test_sqs_answers_lost_after_it_acted_are_harmless(world: World) -> None:
    """SQS acts, then its answer is lost (a 500 after the fact): a lost receive hides ten
    messages nobody saw, which come back after the visibility timeout; a lost delete is
    retried by botocore, and deleting again with the same handles succeeds. Each update is
    applied once. (The local queue answers in-process: no answer can be lost.)"""
    world.send(world.mail.messages)
    world.fail("receive", persistent=False, error=INTERNAL_ERROR, lost=True)
    world.fail("delete", persistent=False, error=INTERNAL_ERROR, lost=True)

    first = world.run()

    assert (first.received, first.updates_applied) == (MESSAGES - 10, MESSAGES - 10)
    assert (first.messages_deleted, first.delete_failures) == (MESSAGES - 10, 0)
    assert world.held() == 10
    world.expire()
    second = world.run()

    assert (second.received, second.updates_applied, second.messages_deleted) == (10, 10, 10)
    assert_applied_once(world.mail)
    world.expire()
    assert world.held() == 0
    assert_every_delete_after_commit(world)


# -- the run dying between applying, committing and deleting ---------------------------------------


@pytest.mark.parametrize("moment", ["before_commit", "after_commit"])
def test_a_run_dying_around_its_commit_deletes_nothing_uncommitted(
    world: World, moment: str
) -> None:
    """The run dies after applying but before committing (nothing is committed, nothing
    deleted, all comes back and is applied once), or after committing but before deleting
    (all comes back and is a duplicate: no row, no timestamp changes)."""
    mail = world.mail
    world.send(mail.messages)

    def die(at: str) -> None:
        if at == moment:
            raise WorkerKilled(f"the worker died {moment.replace('_', ' ')}")

    with pytest.raises(WorkerKilled):
        world.run(sessions=Stalls(mail.db_url, die))

    assert world.watch.deleted == []
    if moment == "before_commit":
        assert_nothing_applied(mail)
    else:
        applied = assert_applied_once(mail)
    world.expire()
    assert world.held() == MESSAGES
    again = world.run()

    assert (again.received, again.messages_deleted) == (MESSAGES, MESSAGES)
    if moment == "before_commit":
        assert (again.updates_applied, again.recipients_received) == (MESSAGES, PIECES)
        assert_applied_once(mail)
    else:
        assert (again.updates_applied, again.events_duplicated) == (0, MESSAGES)
        assert snapshot(mail.db_url) == applied
    world.expire()
    assert world.held() == 0
    assert_every_delete_after_commit(world)

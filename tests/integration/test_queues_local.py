"""LocalQueue specifics: concurrency across threads and processes, durability, stale handles,
long polling, operator tools (dead-letter listing, redrive, purge) and SQS's limits."""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mail_pipeline.integrations.errors import RequestRejected
from mail_pipeline.integrations.queues.conventions import MAX_MESSAGE_BYTES
from mail_pipeline.integrations.queues.local import (
    DELETED_HANDLE_MEMORY_SECONDS,
    LocalQueue,
)
from mail_pipeline.integrations.queues.local_db import QueueDatabase


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> LocalQueue:
    return LocalQueue(
        ":memory:", "jobs", max_receive_count=3, clock=clock, sleep=clock.sleep, poll_interval=0.5
    )


def _drain_ids(queue: LocalQueue, pause: float = 0.0) -> list[str]:
    """Receive and delete until empty; the ids this receiver got.

    ``pause`` after each batch stands for the work, so that concurrent receivers interleave.
    """
    ids: list[str] = []
    while batch := queue.receive(visibility_timeout=60):
        ids.extend(m.message_id for m in batch)
        time.sleep(pause)
        assert queue.delete([m.receipt_handle for m in batch]) == []
    return ids


def _drain_file_queue(path: str, start: Any, results: Any) -> None:
    """A receiver in its own process (or thread) with its own connection to the file."""
    queue = LocalQueue(path, "jobs")
    start.wait()
    try:
        results.put(_drain_ids(queue, pause=0.003))
    finally:
        queue.close()


# -- concurrency -------------------------------------------------------------------------


def _assert_disjoint_and_complete(results: list[list[str]], sent: list[str]) -> None:
    first, second = results
    assert first and second, "both receivers should have taken part"
    assert set(first).isdisjoint(second)
    assert sorted(first + second) == sorted(sent)


def test_two_threads_on_one_queue_get_disjoint_messages() -> None:
    queue = LocalQueue(":memory:", "jobs")
    sent = queue.send_batch([f"m{i}" for i in range(200)])
    start = threading.Barrier(2)

    def worker() -> list[str]:
        start.wait()
        return _drain_ids(queue, pause=0.003)

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(worker), pool.submit(worker)]]

    _assert_disjoint_and_complete(results, sent)


def test_two_threads_with_own_connections_to_one_file_get_disjoint_messages(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "queues.sqlite")
    sent = LocalQueue(path, "jobs").send_batch([f"m{i}" for i in range(200)])
    start = threading.Barrier(2)
    results: queue_module.Queue[list[str]] = queue_module.Queue()
    workers = [
        threading.Thread(target=_drain_file_queue, args=(path, start, results)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)

    _assert_disjoint_and_complete([results.get_nowait(), results.get_nowait()], sent)


def test_two_processes_on_one_file_get_disjoint_messages(tmp_path: Path) -> None:
    path = str(tmp_path / "queues.sqlite")
    sent = LocalQueue(path, "jobs").send_batch([f"m{i}" for i in range(200)])
    context = multiprocessing.get_context("fork")
    start = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(target=_drain_file_queue, args=(path, start, results)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()

    collected = [results.get(timeout=10), results.get(timeout=10)]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0

    _assert_disjoint_and_complete(collected, sent)


# -- durability --------------------------------------------------------------------------


def test_messages_and_state_survive_a_new_queue_object(tmp_path: Path) -> None:
    path = tmp_path / "state" / "queues.sqlite"
    first = LocalQueue(path, "jobs")
    assert not path.exists()  # no I/O until used
    first.send_batch(["a", "b", "c"])
    [in_flight] = first.receive(max_messages=1)
    [to_dlq] = first.receive(max_messages=1)
    first.dead_letter(to_dlq, "bad address")
    first.close()

    second = LocalQueue(path, "jobs")

    assert second.approximate_depth() == 1
    assert [m.body for m in second.receive()] == ["c"]
    assert second.delete([in_flight.receipt_handle]) == []
    assert [(d.body, d.reason) for d in second.dead_letters()] == [("b", "bad address")]


# -- receipt handles ---------------------------------------------------------------------


def test_stale_handle_no_longer_deletes(queue: LocalQueue) -> None:
    queue.send("job")
    [first] = queue.receive(visibility_timeout=0)
    [second] = queue.receive(visibility_timeout=0)

    [failure] = queue.delete([first.receipt_handle])

    assert failure.receipt_handle == first.receipt_handle
    assert failure.code == "ReceiptHandleIsInvalid"
    assert queue.approximate_depth() == 1
    assert queue.delete([second.receipt_handle]) == []
    assert queue.approximate_depth() == 0


def test_handle_is_invalid_once_the_message_was_redriven(queue: LocalQueue) -> None:
    queue.send("poison")
    last = [queue.receive(visibility_timeout=0)[0] for _ in range(3)][-1]
    assert last.receive_count == 3

    assert queue.receive(visibility_timeout=0) == []

    assert [f.code for f in queue.delete([last.receipt_handle])] == ["ReceiptHandleIsInvalid"]
    assert [m.body for m in queue.dlq().receive()] == ["poison"]


def test_deleted_handles_are_forgotten_after_a_while(queue: LocalQueue, clock: FakeClock) -> None:
    queue.send("job")
    [message] = queue.receive()
    assert queue.delete([message.receipt_handle]) == []

    clock.advance(DELETED_HANDLE_MEMORY_SECONDS + 1)
    queue.send("other")  # any later delete prunes the memory
    queue.delete([queue.receive()[0].receipt_handle])

    assert [f.code for f in queue.delete([message.receipt_handle])] == ["ReceiptHandleIsInvalid"]


def test_change_visibility_refuses_stale_and_expired_handles(
    queue: LocalQueue, clock: FakeClock
) -> None:
    queue.send("job")
    [message] = queue.receive(visibility_timeout=10)
    queue.change_visibility(message.receipt_handle, 100)
    clock.advance(99)
    assert queue.receive() == []

    clock.advance(2)
    with pytest.raises(RequestRejected) as expired:
        queue.change_visibility(message.receipt_handle, 5)
    assert expired.value.code == "MessageNotInflight"

    queue.receive()
    with pytest.raises(RequestRejected) as stale:
        queue.change_visibility(message.receipt_handle, 5)
    assert stale.value.code == "ReceiptHandleIsInvalid"


# -- visibility and long polling (fake clock) ----------------------------------------------


def test_visibility_timeout_defaults_to_the_queue_setting(clock: FakeClock) -> None:
    queue = LocalQueue(":memory:", "jobs", visibility_timeout=30, clock=clock)
    queue.send("job")
    queue.receive()

    clock.advance(29.9)
    assert queue.receive() == []
    clock.advance(0.2)
    assert [m.receive_count for m in queue.receive()] == [2]


def test_long_poll_on_an_empty_queue_waits_the_full_time(
    queue: LocalQueue, clock: FakeClock
) -> None:
    started = clock.now

    assert queue.receive(wait_seconds=2) == []

    assert clock.now - started == pytest.approx(2.0)
    assert clock.sleeps == [0.5, 0.5, 0.5, 0.5]


def test_long_poll_is_capped_at_twenty_seconds(queue: LocalQueue, clock: FakeClock) -> None:
    started = clock.now

    queue.receive(wait_seconds=45)

    assert clock.now - started == pytest.approx(20.0)


def test_long_poll_returns_a_message_sent_during_the_wait(tmp_path: Path) -> None:
    queue = LocalQueue(tmp_path / "q.sqlite", "jobs", poll_interval=0.02)
    sender = threading.Timer(0.2, lambda: LocalQueue(tmp_path / "q.sqlite", "jobs").send("late"))
    started = time.monotonic()
    sender.start()

    messages = queue.receive(wait_seconds=5)

    sender.join()
    assert [m.body for m in messages] == ["late"]
    assert 0.15 < time.monotonic() - started < 2


# -- dead letters and operator tools -------------------------------------------------------


def test_dead_letters_lists_reasons_and_redrive_brings_them_back(queue: LocalQueue) -> None:
    queue.send("unparseable", attributes={"printer": "lob"})
    queue.send("poison")
    [unparseable, poison] = queue.receive(visibility_timeout=0)
    queue.dead_letter(unparseable, "status event is not JSON")
    for _ in range(2):
        queue.receive(visibility_timeout=0)
    assert queue.receive(visibility_timeout=0) == []  # poison is received 3 times, then moved

    dead = queue.dead_letters()

    assert [(d.body, d.source_queue, d.original_message_id) for d in dead] == [
        ("unparseable", "jobs", unparseable.message_id),
        ("poison", "jobs", poison.message_id),
    ]
    assert dead[0].reason == "status event is not JSON"
    assert dead[0].attributes["printer"] == "lob"
    assert dead[1].reason == "received 3 times (max_receive_count 3)"
    assert dead[1].receive_count == 3

    assert queue.redrive_dead_letters() == 2

    assert queue.dead_letters() == []
    back = {m.message_id: m for m in queue.receive()}
    assert set(back) == {unparseable.message_id, poison.message_id}
    assert [m.receive_count for m in back.values()] == [1, 1]
    assert back[unparseable.message_id].attributes.keys() == {"printer", "SentTimestamp"}


def test_dead_letter_with_a_stale_handle_moves_nothing(queue: LocalQueue) -> None:
    queue.send("job")
    [old] = queue.receive(visibility_timeout=0)
    queue.receive(visibility_timeout=0)

    with pytest.raises(RequestRejected) as caught:
        queue.dead_letter(old, "too late")

    assert caught.value.code == "ReceiptHandleIsInvalid"
    assert queue.dead_letters() == []
    assert queue.approximate_depth() == 1


def test_purge_empties_the_queue_but_not_its_dlq(queue: LocalQueue) -> None:
    queue.send_batch(["a", "b", "c"])
    [first, *_] = queue.receive()
    queue.dead_letter(first, "bad")

    assert queue.purge() == 2

    assert queue.approximate_depth() == 0
    assert queue.receive() == []
    assert len(queue.dead_letters()) == 1


def test_queues_in_one_database_are_separate(clock: FakeClock) -> None:
    database = QueueDatabase(":memory:")
    proofs = LocalQueue(database, "proofs", clock=clock)
    mailings = LocalQueue(database, "mailings", clock=clock)
    proofs.send("proof-1")

    assert mailings.receive() == []
    assert mailings.approximate_depth() == 0
    assert [m.body for m in proofs.receive()] == ["proof-1"]


# -- limits and configuration ------------------------------------------------------------


def test_oversized_and_invalid_messages_are_rejected_like_sqs(queue: LocalQueue) -> None:
    with pytest.raises(RequestRejected) as too_big:
        queue.send("x" * (MAX_MESSAGE_BYTES + 1))
    assert too_big.value.code == "InvalidParameterValue"
    with pytest.raises(RequestRejected) as bad_char:
        queue.send("nul \x00 byte")
    assert bad_char.value.code == "InvalidMessageContents"
    with pytest.raises(RequestRejected):
        queue.send("")

    with pytest.raises(RequestRejected):
        queue.send_batch(["fine", "\x00"])

    assert queue.approximate_depth() == 0


def test_send_accepts_exactly_one_mib(queue: LocalQueue) -> None:
    queue.send("x" * MAX_MESSAGE_BYTES)

    assert len(queue.receive()[0].body) == MAX_MESSAGE_BYTES


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="dead_letter_queue"):
        LocalQueue(":memory:", "jobs", dead_letter_queue=None)
    with pytest.raises(ValueError, match="own dead-letter"):
        LocalQueue(":memory:", "jobs", dead_letter_queue="jobs")
    with pytest.raises(ValueError, match="visibility"):
        LocalQueue(":memory:", "jobs", visibility_timeout=-1)

    plain = LocalQueue(":memory:", "jobs", max_receive_count=None, dead_letter_queue=None)
    plain.send("x")
    [message] = plain.receive()
    with pytest.raises(RequestRejected, match="no dead-letter queue"):
        plain.dead_letter(message, "why")

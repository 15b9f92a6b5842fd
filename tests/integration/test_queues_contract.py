"""The MessageQueue contract, run against SQS (on moto) and the local SQLite queue alike.

Each test gets a queue with a dead-letter queue and ``max_receive_count=2``. Time moves with
``advance``: a real sleep for moto (which uses the wall clock), a fake clock for the local
queue. Visibility timeouts are 0-1 s so the moto runs stay fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from moto import mock_aws

from mail_pipeline.integrations.errors import RequestRejected
from mail_pipeline.integrations.queues.base import MessageQueue, QueueMessage
from mail_pipeline.integrations.queues.conventions import SENT_TIMESTAMP
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.queues.sqs import SqsQueue
from mail_pipeline.integrations.queues.sqs_setup import ensure_queue_with_dlq, make_sqs_client

MAX_RECEIVE_COUNT = 2


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    queue: MessageQueue
    dlq: MessageQueue
    advance: Callable[[float], None]


@pytest.fixture(params=["sqs", "local"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "sqs":
        with mock_aws():
            client = make_sqs_client(
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            url, dlq_url = ensure_queue_with_dlq(
                client, "mail-status", max_receive_count=MAX_RECEIVE_COUNT, visibility_timeout=30
            )
            queue = SqsQueue(url, client=client)
            yield Harness(queue, SqsQueue(dlq_url, client=client), time.sleep)
    else:
        clock = FakeClock()
        local = LocalQueue(
            ":memory:",
            "mail-status",
            visibility_timeout=30,
            max_receive_count=MAX_RECEIVE_COUNT,
            clock=clock,
            sleep=clock.advance,
        )
        yield Harness(local, local.dlq(), clock.advance)
        local.close()


def drain(queue: MessageQueue) -> list[QueueMessage]:
    """Receive (hiding for 30 s) until the queue answers empty."""
    received: list[QueueMessage] = []
    while batch := queue.receive():
        received.extend(batch)
    return received


def test_send_receive_delete_round_trip(harness: Harness) -> None:
    queue = harness.queue
    message_id = queue.send('{"event": "delivered"}', attributes={"printer": "lob"})

    [message] = queue.receive(visibility_timeout=0)

    assert message.message_id == message_id
    assert message.body == '{"event": "delivered"}'
    assert message.receive_count == 1
    assert message.attributes["printer"] == "lob"
    assert message.attributes[SENT_TIMESTAMP].isdigit()
    assert queue.delete([message.receipt_handle]) == []
    # With a visibility timeout of 0 it would be back at once had the delete not worked.
    assert queue.receive(visibility_timeout=0) == []
    assert queue.approximate_depth() == 0


def test_receive_returns_at_most_ten_and_three_receives_drain_25(harness: Harness) -> None:
    bodies = [f"event-{i}" for i in range(25)]
    harness.queue.send_batch(bodies)

    first = harness.queue.receive(max_messages=50)  # clamped to 10
    second = harness.queue.receive()
    third = harness.queue.receive()

    assert [len(first), len(second), len(third)] == [10, 10, 5]
    assert sorted(m.body for m in first + second + third) == sorted(bodies)
    assert harness.queue.receive() == []


def test_receive_validates_its_arguments(harness: Harness) -> None:
    with pytest.raises(ValueError, match="max_messages"):
        harness.queue.receive(max_messages=0)
    with pytest.raises(ValueError, match="wait_seconds"):
        harness.queue.receive(wait_seconds=-1)
    with pytest.raises(ValueError, match="visibility timeout"):
        harness.queue.receive(visibility_timeout=43_201)


def test_received_message_is_hidden_until_its_visibility_timeout(harness: Harness) -> None:
    queue = harness.queue
    queue.send("status")

    [first] = queue.receive(visibility_timeout=1)
    assert queue.receive(visibility_timeout=1) == []
    assert queue.approximate_depth() == 0

    harness.advance(1.2)
    [again] = queue.receive(visibility_timeout=1)

    assert again.message_id == first.message_id
    assert again.receive_count == 2
    assert again.receipt_handle != first.receipt_handle


def test_batch_delete_reports_bogus_handle_and_deletes_the_rest(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch(["a", "b", "c"])
    handles = [m.receipt_handle for m in queue.receive(visibility_timeout=0)]
    assert len(handles) == 3

    failures = queue.delete([handles[0], "not-a-real-receipt-handle", handles[1], handles[2]])

    assert [(f.receipt_handle, f.code) for f in failures] == [
        ("not-a-real-receipt-handle", "ReceiptHandleIsInvalid")
    ]
    assert failures[0].message
    assert queue.receive(visibility_timeout=0) == []


def test_deleting_twice_with_the_latest_handle_succeeds(harness: Harness) -> None:
    harness.queue.send("once")
    [message] = harness.queue.receive()

    assert harness.queue.delete([message.receipt_handle]) == []
    assert harness.queue.delete([message.receipt_handle]) == []
    assert harness.queue.delete([]) == []


def test_message_moves_to_dlq_after_max_receive_count(harness: Harness) -> None:
    queue = harness.queue
    message_id = queue.send("poison", attributes={"printer": "stannp"})

    counts = [queue.receive(visibility_timeout=0)[0].receive_count for _ in range(2)]
    assert counts == [1, 2]

    assert queue.receive(visibility_timeout=0) == []
    [dead] = harness.dlq.receive()
    assert dead.body == "poison"
    assert dead.message_id == message_id
    assert dead.attributes["printer"] == "stannp"
    assert queue.approximate_depth() == 0


def test_dead_letter_moves_message_with_reason(harness: Harness) -> None:
    queue = harness.queue
    queue.send("not json", attributes={"printer": "lob"})
    [message] = queue.receive(visibility_timeout=0)

    queue.dead_letter(message, "status event is not JSON")

    assert queue.receive(visibility_timeout=0) == []
    [dead] = harness.dlq.receive()
    assert dead.body == "not json"
    assert dead.attributes["reason"] == "status event is not JSON"
    assert dead.attributes["source_queue"] == queue.name == "mail-status"
    assert dead.attributes["original_message_id"] == message.message_id
    assert dead.attributes["printer"] == "lob"


def test_dead_letter_needs_a_reason(harness: Harness) -> None:
    harness.queue.send("x")
    [message] = harness.queue.receive(visibility_timeout=0)

    with pytest.raises(ValueError, match="reason"):
        harness.queue.dead_letter(message, "  ")
    assert [m.body for m in harness.queue.receive()] == ["x"]


def test_send_batch_of_23(harness: Harness) -> None:
    bodies = [f"piece-{i}" for i in range(23)]

    ids = harness.queue.send_batch(bodies)

    assert len(ids) == 23 == len(set(ids))
    received = drain(harness.queue)
    assert {m.message_id: m.body for m in received} == dict(zip(ids, bodies, strict=True))


def test_change_visibility_makes_a_message_visible_again(harness: Harness) -> None:
    queue = harness.queue
    queue.send("slow job")
    [message] = queue.receive(visibility_timeout=30)
    assert queue.receive() == []

    queue.change_visibility(message.receipt_handle, 0)

    [again] = queue.receive()
    assert again.message_id == message.message_id
    assert again.receive_count == 2
    with pytest.raises(RequestRejected):
        queue.change_visibility("not-a-real-receipt-handle", 10)


def test_approximate_depth_counts_visible_messages(harness: Harness) -> None:
    harness.queue.send_batch(["1", "2", "3"])
    assert harness.queue.approximate_depth() == 3

    harness.queue.receive(max_messages=1)

    assert harness.queue.approximate_depth() == 2


def test_sent_timestamp_is_reserved(harness: Harness) -> None:
    with pytest.raises(ValueError, match=SENT_TIMESTAMP):
        harness.queue.send("x", attributes={SENT_TIMESTAMP: "1"})
    assert harness.queue.approximate_depth() == 0

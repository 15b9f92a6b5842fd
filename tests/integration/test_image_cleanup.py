"""Image cleanup end to end: deletion messages on a queue with SQS semantics, the real
Cloudflare Images client against the file-backed sandbox."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.images.cloudflare import CloudflareImages, proof_image_id
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox, LocalImageUrl
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.sandbox.store import SandboxStore
from mail_pipeline.integrations.sandbox.transport import SandboxBehaviour
from mail_pipeline.services.image_cleanup import (
    ImageCleanupResult,
    ImageDeletion,
    MalformedDeletion,
    deletion_message,
    parse_deletion_message,
    process_image_deletions,
)

VISIBILITY = 120
QUICK_RETRY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, max_retry_after=0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "white").save(buffer, format="PNG")
    return buffer.getvalue()


class Hosting:
    """The Cloudflare sandbox over one store and directory; clients with any behaviour."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self.store = SandboxStore()
        self.dir = tmp_path
        self.clock = clock

    def client(
        self, behaviour: SandboxBehaviour | None = None, *, batch: bool = True
    ) -> CloudflareImages:
        """A client of the batch API, as in production; ``batch=False``: the plain API."""
        sandbox = CloudflareImagesSandbox(
            self.store, behaviour, storage_dir=self.dir, clock=self.clock, sleep=lambda s: None
        )
        return CloudflareImages(
            "sandbox-account",
            "sandbox-cloudflare-token",
            transport=sandbox,
            delivery_url=LocalImageUrl(self.dir),
            retry=QUICK_RETRY,
            sleep=lambda s: None,
            clock=self.clock,
            batch=batch,
        )

    def proof(self, recipient_id: int) -> list[str]:
        """Upload a recipient's front and back; return their ids."""
        client = self.client()
        ids = [
            proof_image_id("test-key", 3, recipient_id, "0123abcd", side)
            for side in ("front", "back")
        ]
        for image_id in ids:
            client.upload(image_id, png())
        return ids

    def exists(self, image_id: str) -> bool:
        return (self.dir / "sandbox-hash" / image_id).exists()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hosting(tmp_path: Path, clock: FakeClock) -> Hosting:
    return Hosting(tmp_path, clock)


@pytest.fixture
def queue(clock: FakeClock) -> Iterator[LocalQueue]:
    q = LocalQueue(":memory:", "image-deletions", visibility_timeout=VISIBILITY, clock=clock)
    yield q
    q.close()


def test_a_recipients_images_are_deleted_and_then_its_message(
    hosting: Hosting, queue: LocalQueue, clock: FakeClock
) -> None:
    proofs = {r: hosting.proof(r) for r in (7, 8, 9)}
    assert all(hosting.exists(i) for ids in proofs.values() for i in ids)
    queue.send_batch([deletion_message(r, ids) for r, ids in proofs.items()])

    result = process_image_deletions(queue, hosting.client())

    assert result == ImageCleanupResult(received=3, images_deleted=6, messages_deleted=3)
    assert not any(hosting.exists(i) for ids in proofs.values() for i in ids)
    clock.advance(VISIBILITY + 1)
    assert queue.receive() == []


def test_images_already_gone_count_as_deleted(hosting: Hosting, queue: LocalQueue) -> None:
    front, back = hosting.proof(7)
    queue.send(deletion_message(7, [front, back]))
    queue.send(deletion_message(7, [front, back]))  # a duplicate request: the same images
    queue.send(deletion_message(8, ["proofs/c3/r8/never-uploaded/front.png"]))

    result = process_image_deletions(queue, hosting.client())

    assert result.images_deleted == 2
    assert result.images_already_gone == 1
    assert result.messages_deleted == 3
    # A redelivered message is harmless: its images are simply already gone.
    queue.send(deletion_message(7, [front, back]))
    again = process_image_deletions(queue, hosting.client())
    assert (again.images_deleted, again.images_already_gone, again.messages_deleted) == (0, 2, 1)


def test_malformed_messages_go_to_the_dlq_with_their_reason(
    hosting: Hosting, queue: LocalQueue
) -> None:
    bad = [
        "not json",
        json.dumps(["proofs/c3/r7/x/front.png"]),
        json.dumps({"recipient_id": 7}),
        json.dumps({"recipient_id": "7", "image_ids": ["proofs/c3/r7/x/front.png"]}),
        json.dumps({"recipient_id": 7, "image_ids": []}),
        json.dumps({"recipient_id": 7, "image_ids": ["proofs/../../etc/passwd"]}),
        json.dumps({"recipient_id": 7, "image_ids": [42]}),
    ]
    queue.send_batch(bad)
    good = hosting.proof(9)
    queue.send(deletion_message(9, good))

    result = process_image_deletions(queue, hosting.client())

    assert result.dead_lettered == len(bad)
    assert result.messages_deleted == 1 and result.images_deleted == 2
    dead = queue.dead_letters()
    assert [d.body for d in dead] == bad
    assert [d.reason for d in dead] == list(result.dead_letter_reasons)
    for letter, expected in zip(
        dead,
        [
            "not JSON",
            "not a JSON object",
            "no list of image_ids",
            "positive integer recipient_id, not '7'",
            "names no images",
            "'..' path segment",
            "it is not a string",
        ],
        strict=True,
    ):
        assert expected in letter.reason
    assert queue.approximate_depth() == 0


def test_an_unavailable_vendor_leaves_the_message_for_redelivery(
    hosting: Hosting, queue: LocalQueue, clock: FakeClock
) -> None:
    ids = hosting.proof(7)
    queue.send(deletion_message(7, ids))

    down = process_image_deletions(queue, hosting.client(SandboxBehaviour(failure_rate=1.0)))

    assert down.images_failed == 2
    assert down.messages_retained == 1 and down.messages_deleted == 0
    assert all(hosting.exists(i) for i in ids)
    assert queue.dead_letters() == []

    clock.advance(VISIBILITY + 1)
    back = process_image_deletions(queue, hosting.client())
    assert (back.images_deleted, back.messages_deleted) == (2, 1)
    assert not any(hosting.exists(i) for i in ids)


def test_a_rate_limit_stops_the_pass_and_keeps_the_messages(
    hosting: Hosting, queue: LocalQueue, clock: FakeClock
) -> None:
    proofs = {r: hosting.proof(r) for r in range(1, 11)}
    queue.send_batch([deletion_message(r, ids) for r, ids in proofs.items()])
    limited = SandboxBehaviour(rate_limit=(3, 300.0))

    # The global API's limit, whose 429 locks the token out for 5 minutes.
    result = process_image_deletions(queue, hosting.client(limited, batch=False), concurrency=1)

    assert result.rate_limited
    assert result.images_deleted == 3
    assert result.images_failed == 1  # the 4th call met the 429 (and the 5-minute lockout)
    assert result.images_skipped == 16  # nobody asked Cloudflare again during the lockout
    assert result.messages_deleted == 1  # recipient 1's front and back were both deleted
    assert result.messages_retained == 9

    clock.advance(301)  # the lockout is over; the messages are visible again
    rest = process_image_deletions(queue, hosting.client())
    assert rest.messages_deleted == 9
    assert rest.images_deleted + rest.images_already_gone == 18
    assert not any(hosting.exists(i) for ids in proofs.values() for i in ids)


class CountingImages(CloudflareImages):
    """The real client, counting how many deletes run at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def delete(self, image_id: str) -> bool:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(0.01)
            return super().delete(image_id)
        finally:
            with self.lock:
                self.running -= 1


def test_deletes_run_concurrently_within_the_bound(hosting: Hosting, queue: LocalQueue) -> None:
    proofs = {r: hosting.proof(r) for r in range(1, 21)}
    queue.send_batch([deletion_message(r, ids) for r, ids in proofs.items()])
    base = hosting.client()
    images = CountingImages(
        "sandbox-account",
        "sandbox-cloudflare-token",
        transport=base.api.transport,
        delivery_url=LocalImageUrl(hosting.dir),
    )

    result = process_image_deletions(queue, images, concurrency=4)

    assert result.images_deleted == 40 and result.messages_deleted == 20
    assert 1 < images.peak <= 4


def test_deletion_message_round_trips_and_refuses_what_would_be_dead_lettered() -> None:
    ids = ["proofs/c3/r7/ab12/front.png", "proofs/c3/r7/ab12/back.png"]
    message = deletion_message(7, [*ids, ids[0]])
    assert json.loads(message) == {"recipient_id": 7, "image_ids": ids}
    assert parse_deletion_message(message) == ImageDeletion(7, tuple(ids))
    with pytest.raises(MalformedDeletion, match="names no images"):
        deletion_message(7, [])
    with pytest.raises(MalformedDeletion, match="recipient_id"):
        deletion_message(0, ids)
    with pytest.raises(MalformedDeletion, match="bad image id"):
        deletion_message(7, ["/absolute.png"])

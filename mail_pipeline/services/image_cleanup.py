"""Image cleanup (seed 000 ``cloudflare_image_cleaner``): delete hosted proof images once a
postcard is printed.

The message contract of the image-deletion queue, one message per recipient::

    {"recipient_id": 7, "image_ids": ["proofs/c3/r7/<fingerprint>/front.png",
                                      "proofs/c3/r7/<fingerprint>/back.png"]}

- ``recipient_id``: the recipient whose proof images these are (for people reading the
  queue or the DLQ; nothing is looked up with it);
- ``image_ids``: a non-empty list of Cloudflare Images custom ids (see
  :func:`~mail_pipeline.integrations.images.cloudflare.proof_image_id`).

The mailing service enqueues with :func:`deletion_message` after the printer accepted the
piece (the printer has fetched the images by then, or fetches them from its own copy).

:func:`process_image_deletions` is one pass over the queue: it receives up to
``max_receives`` x 10 messages, deletes their images with bounded concurrency and deletes a
message only when every one of its images is gone. The rules:

- an image that is already gone (404) counts as deleted: deletion is idempotent, so a
  redelivered message, or two messages naming one image, are harmless;
- a message that breaks the contract goes to the dead-letter queue at once, with the reason;
- any error from Cloudflare leaves the message on the queue, to be retried after its
  visibility timeout (the queue's redrive policy dead-letters a message that keeps failing).
  After a 429 the pass stops calling Cloudflare: a rate-limited token is locked out for
  minutes, and every further call would only prolong it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mail_pipeline.integrations.errors import IntegrationError, RateLimited
from mail_pipeline.integrations.images.cloudflare import CloudflareImages, id_problem
from mail_pipeline.integrations.queues.base import MessageQueue, QueueMessage
from mail_pipeline.services.draining import dead_letter, delete_processed, receive_pages

logger = logging.getLogger(__name__)

#: At most this many dead-letter reasons are kept in a result (the count is always exact).
MAX_REASONS = 20


class MalformedDeletion(ValueError):
    """An image-deletion message that breaks the contract; the message says how."""


@dataclass(frozen=True)
class ImageDeletion:
    recipient_id: int
    image_ids: tuple[str, ...]


def deletion_message(recipient_id: int, image_ids: Sequence[str]) -> str:
    """The queue message asking to delete a recipient's proof images (duplicates dropped);
    :class:`MalformedDeletion` if it would break the contract."""
    deletion = _checked(recipient_id, list(image_ids))
    return json.dumps(
        {"recipient_id": deletion.recipient_id, "image_ids": list(deletion.image_ids)},
        separators=(",", ":"),
    )


def parse_deletion_message(body: str) -> ImageDeletion:
    """Read a message; :class:`MalformedDeletion` says what is wrong with a bad one."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedDeletion(f"the image-deletion message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedDeletion("the image-deletion message is not a JSON object")
    image_ids = data.get("image_ids")
    if not isinstance(image_ids, list):
        raise MalformedDeletion("the image-deletion message has no list of image_ids")
    return _checked(data.get("recipient_id"), image_ids)


def _checked(recipient_id: Any, image_ids: list[Any]) -> ImageDeletion:
    if isinstance(recipient_id, bool) or not isinstance(recipient_id, int) or recipient_id < 1:
        raise MalformedDeletion(
            "the image-deletion message needs a positive integer recipient_id, "
            f"not {recipient_id!r}"
        )
    if not image_ids:
        raise MalformedDeletion(
            f"the image-deletion message for recipient {recipient_id} names no images"
        )
    for image_id in image_ids:
        problem = id_problem(image_id) if isinstance(image_id, str) else "it is not a string"
        if problem:
            raise MalformedDeletion(
                f"the image-deletion message for recipient {recipient_id} has a bad image "
                f"id {image_id!r}: {problem}"
            )
    return ImageDeletion(recipient_id, tuple(dict.fromkeys(image_ids)))


class _Outcome(StrEnum):
    DELETED = "deleted"
    ALREADY_GONE = "already_gone"
    FAILED = "failed"
    SKIPPED = "skipped"  # not tried: the pass stopped after a rate limit


@dataclass(frozen=True)
class ImageCleanupResult:
    """What one pass over the image-deletion queue did."""

    received: int = 0
    images_deleted: int = 0
    #: Images Cloudflare no longer had (404): counted as deleted.
    images_already_gone: int = 0
    #: Images whose deletion failed (their messages stay on the queue).
    images_failed: int = 0
    #: Images not tried because Cloudflare rate-limited the pass.
    images_skipped: int = 0
    messages_deleted: int = 0
    #: Messages left for redelivery because an image of theirs is not gone yet.
    messages_retained: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: tuple[str, ...] = ()
    dead_letter_failures: int = 0
    delete_failures: int = 0
    rate_limited: bool = False


def process_image_deletions(
    queue: MessageQueue,
    images: CloudflareImages,
    *,
    max_receives: int = 5,
    concurrency: int = 8,
    visibility_timeout: int = 120,
    log: logging.Logger = logger,
) -> ImageCleanupResult:
    """One pass over the image-deletion queue (see the module docstring)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    messages = receive_pages(queue, max_receives, visibility_timeout, log)

    requests: list[tuple[QueueMessage, ImageDeletion]] = []
    reasons: list[str] = []
    dead_lettered = dead_letter_failures = 0
    for message in messages:
        try:
            requests.append((message, parse_deletion_message(message.body)))
        except MalformedDeletion as exc:
            if dead_letter(queue, message, str(exc), log, "image-deletion"):
                dead_lettered += 1
                if len(reasons) < MAX_REASONS:
                    reasons.append(str(exc))
            else:
                dead_letter_failures += 1

    image_ids = list(dict.fromkeys(i for _, request in requests for i in request.image_ids))
    outcomes, rate_limited = _delete_images(images, image_ids, concurrency, log)
    gone = {_Outcome.DELETED, _Outcome.ALREADY_GONE}
    done = [m for m, request in requests if all(outcomes[i] in gone for i in request.image_ids)]
    delete_failures = delete_processed(queue, done, log, "image-deletion")

    counts = Counter(outcomes.values())
    result = ImageCleanupResult(
        received=len(messages),
        images_deleted=counts[_Outcome.DELETED],
        images_already_gone=counts[_Outcome.ALREADY_GONE],
        images_failed=counts[_Outcome.FAILED],
        images_skipped=counts[_Outcome.SKIPPED],
        messages_deleted=len(done) - delete_failures,
        messages_retained=len(requests) - len(done),
        dead_lettered=dead_lettered,
        dead_letter_reasons=tuple(reasons),
        dead_letter_failures=dead_letter_failures,
        delete_failures=delete_failures,
        rate_limited=rate_limited,
    )
    if messages:
        log.info(
            "image cleanup on %s: %s messages, %s images deleted, %s already gone, %s failed, "
            "%s skipped, %s messages kept, %s dead-lettered",
            queue.name,
            result.received,
            result.images_deleted,
            result.images_already_gone,
            result.images_failed,
            result.images_skipped,
            result.messages_retained,
            result.dead_lettered,
        )
    return result


def _delete_images(
    images: CloudflareImages, image_ids: Sequence[str], concurrency: int, log: logging.Logger
) -> tuple[dict[str, _Outcome], bool]:
    """Delete the images, ``concurrency`` at a time; after a 429 the rest are skipped.
    Returns each image's outcome and whether Cloudflare rate-limited the pass."""
    stop = threading.Event()

    def delete_one(image_id: str) -> _Outcome:
        if stop.is_set():
            return _Outcome.SKIPPED
        try:
            return _Outcome.DELETED if images.delete(image_id) else _Outcome.ALREADY_GONE
        except RateLimited as exc:
            stop.set()
            log.warning("Cloudflare rate-limited the image cleanup; stopping this pass: %s", exc)
            return _Outcome.FAILED
        except IntegrationError as exc:
            log.warning("a proof image was not deleted (kept for a later pass): %s", exc)
            return _Outcome.FAILED

    if not image_ids:
        return {}, False
    workers = min(concurrency, len(image_ids))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-cleanup") as pool:
        outcomes = dict(zip(image_ids, pool.map(delete_one, image_ids), strict=True))
    return outcomes, stop.is_set()

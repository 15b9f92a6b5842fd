"""SqsQueue specifics: exact requests (botocore Stubber), error mapping, batching, DLQ lookup,
and queue setup (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.queues.conventions import MAX_MESSAGE_BYTES, batches
from mail_pipeline.integrations.queues.sqs import SendBatchFailed, SqsQueue
from mail_pipeline.integrations.queues.sqs_setup import (
    DLQ_RETENTION_SECONDS,
    ensure_queue_with_dlq,
    make_sqs_client,
)

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/mail-status"
CREDENTIALS: dict[str, Any] = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def stubbed() -> Iterator[tuple[SqsQueue, Stubber]]:
    client = make_sqs_client(region_name="us-east-1", **CREDENTIALS)
    with Stubber(client) as stubber:
        yield SqsQueue(URL, client=client), stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def moto_client() -> Iterator[Any]:
    with mock_aws():
        yield make_sqs_client(region_name="us-east-1", **CREDENTIALS)


def _message(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "MessageId": f"id-{i}",
        "ReceiptHandle": f"rh-{i}",
        "Body": f"body-{i}",
        "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1795431595657"},
        **extra,
    }


# -- exact requests ----------------------------------------------------------------------


def test_receive_sends_clamped_long_poll_request_and_maps_messages(
    stubbed: tuple[SqsQueue, Stubber],
) -> None:
    queue, stubber = stubbed
    stubber.add_response(
        "receive_message",
        {
            "Messages": [
                _message(
                    1,
                    MessageAttributes={
                        "printer": {"DataType": "String", "StringValue": "lob"},
                        "raw": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
                    },
                )
            ]
        },
        {
            "QueueUrl": URL,
            "MaxNumberOfMessages": 10,
            "WaitTimeSeconds": 20,
            "VisibilityTimeout": 120,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
            "MessageAttributeNames": ["All"],
        },
    )

    [message] = queue.receive(25, wait_seconds=45, visibility_timeout=120)

    assert message.message_id == "id-1"
    assert message.receipt_handle == "rh-1"
    assert message.body == "body-1"
    assert message.receive_count == 3
    assert message.attributes == {
        "printer": "lob",
        "raw": "AQI=",
        "SentTimestamp": "1795431595657",
    }


def test_receive_without_visibility_uses_the_queue_default(
    stubbed: tuple[SqsQueue, Stubber],
) -> None:
    queue, stubber = stubbed
    stubber.add_response(
        "receive_message",
        {},
        {
            "QueueUrl": URL,
            "MaxNumberOfMessages": 3,
            "WaitTimeSeconds": 1,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
            "MessageAttributeNames": ["All"],
        },
    )

    assert queue.receive(3, wait_seconds=0.5) == []


def test_send_batch_sends_tens_and_names_failed_entries(stubbed: tuple[SqsQueue, Stubber]) -> None:
    queue, stubber = stubbed
    bodies = [f"b{i}" for i in range(23)]
    for start, stop in ((0, 10), (10, 20), (20, 23)):
        failed = [i for i in range(start, stop) if i == 21]
        stubber.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": str(i), "MessageId": f"m{i}", "MD5OfMessageBody": "x"}
                    for i in range(start, stop)
                    if i not in failed
                ],
                "Failed": [
                    {"Id": str(i), "SenderFault": False, "Code": "InternalError", "Message": "oops"}
                    for i in failed
                ],
            },
            {
                "QueueUrl": URL,
                "Entries": [{"Id": str(i), "MessageBody": f"b{i}"} for i in range(start, stop)],
            },
        )

    with pytest.raises(SendBatchFailed) as caught:
        queue.send_batch(bodies)

    error = caught.value
    assert [(f.index, f.code, f.sender_fault) for f in error.failures] == [
        (21, "InternalError", False)
    ]
    assert error.message_ids[21] is None
    assert [mid for i, mid in enumerate(error.message_ids) if i != 21] == [
        f"m{i}" for i in range(23) if i != 21
    ]
    assert error.retryable
    assert "#21 InternalError: oops" in str(error)


def test_send_batch_sender_fault_is_not_retryable(stubbed: tuple[SqsQueue, Stubber]) -> None:
    queue, stubber = stubbed
    stubber.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "x"}],
            "Failed": [
                {"Id": "1", "SenderFault": True, "Code": "InvalidMessageContents", "Message": "x"}
            ],
        },
    )

    with pytest.raises(SendBatchFailed) as caught:
        queue.send_batch(["ok", "bad"])

    assert not caught.value.retryable
    assert caught.value.message_ids == ["m0", None]


def test_delete_sends_batches_of_ten_and_reads_failed(stubbed: tuple[SqsQueue, Stubber]) -> None:
    queue, stubber = stubbed
    handles = [f"rh-{i}" for i in range(12)]
    stubber.add_response(
        "delete_message_batch",
        {
            "Successful": [{"Id": str(i)} for i in range(10) if i != 4],
            "Failed": [
                {"Id": "4", "SenderFault": False, "Code": "InternalError", "Message": "later"}
            ],
        },
        {
            "QueueUrl": URL,
            "Entries": [{"Id": str(i), "ReceiptHandle": f"rh-{i}"} for i in range(10)],
        },
    )
    stubber.add_response(
        "delete_message_batch",
        {"Successful": [{"Id": "0"}], "Failed": []},
        {
            "QueueUrl": URL,
            "Entries": [
                {"Id": "0", "ReceiptHandle": "rh-10"},
                {"Id": "1", "ReceiptHandle": "rh-11"},
            ],
        },
    )

    failures = queue.delete(handles)

    assert [(f.receipt_handle, f.code, f.message) for f in failures] == [
        ("rh-4", "InternalError", "later"),
        ("rh-11", "NoAnswer", "SQS did not report on this entry"),
    ]


def test_batches_respect_ten_entries_and_one_mib() -> None:
    assert [len(b) for b in batches(["x"] * 23)] == [10, 10, 3]
    big = "y" * (300 * 1024)
    split = list(batches([big] * 5))
    assert [len(b) for b in split] == [3, 2]
    assert all(sum(len(body) for _, body in b) <= MAX_MESSAGE_BYTES for b in split)
    assert [i for b in split for i, _ in b] == [0, 1, 2, 3, 4]


# -- error mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, RateLimited),
        ("RequestThrottled", 403, RateLimited),
        ("InternalError", 500, VendorUnavailable),
        ("ServiceUnavailable", 503, VendorUnavailable),
        ("InvalidClientTokenId", 403, AuthenticationFailed),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, NotFound),
        ("InvalidParameterValue", 400, RequestRejected),
    ],
)
def test_client_errors_map_to_typed_errors(
    stubbed: tuple[SqsQueue, Stubber], code: str, status: int, expected: type[Exception]
) -> None:
    queue, stubber = stubbed
    stubber.add_client_error(
        "receive_message", service_error_code=code, service_message="no", http_status_code=status
    )

    with pytest.raises(expected) as caught:
        queue.receive()

    assert type(caught.value) is expected
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert "ReceiveMessage failed: no" in str(caught.value)


def test_missing_queue_is_not_found(moto_client: Any) -> None:
    queue = SqsQueue(URL.replace("mail-status", "nope"), client=moto_client)

    with pytest.raises(NotFound) as caught:
        queue.approximate_depth()

    assert caught.value.code == "QueueDoesNotExist"
    assert not caught.value.retryable


def test_unreachable_endpoint_is_vendor_unavailable() -> None:
    client = make_sqs_client(
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        max_attempts=1,
        connect_timeout=1,
        **CREDENTIALS,
    )
    queue = SqsQueue("http://127.0.0.1:9/123456789012/mail-status", client=client)

    with pytest.raises(VendorUnavailable) as caught:
        queue.send("x")

    assert caught.value.retryable


# -- laziness, deletes, dead letters (moto) ----------------------------------------------


def test_client_is_built_on_first_use_only(
    moto_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = ensure_queue_with_dlq(moto_client, "mail-status")
    built: list[dict[str, Any]] = []
    real_client = boto3.client

    def recording_client(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs)
        return real_client(*args, **kwargs)

    monkeypatch.setattr(boto3, "client", recording_client)
    queue = SqsQueue(url, region_name="us-east-1", **CREDENTIALS)
    assert built == []

    queue.send("hello")
    queue.send("again")

    assert len(built) == 1
    assert built[0]["region_name"] == "us-east-1"
    assert queue.approximate_depth() == 2


def test_delete_chunks_by_ten_and_reports_each_failure(moto_client: Any) -> None:
    url, _ = ensure_queue_with_dlq(moto_client, "mail-status")
    queue = SqsQueue(url, client=moto_client)
    queue.send_batch([str(i) for i in range(23)])
    handles = [m.receipt_handle for _ in range(3) for m in queue.receive()]
    assert len(handles) == 23
    assert _attributes(moto_client, url)["ApproximateNumberOfMessagesNotVisible"] == "23"

    failures = queue.delete(["bogus-1", *handles, "bogus-2"])

    assert [(f.receipt_handle, f.code) for f in failures] == [
        ("bogus-1", "ReceiptHandleIsInvalid"),
        ("bogus-2", "ReceiptHandleIsInvalid"),
    ]
    assert _attributes(moto_client, url)["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert queue.approximate_depth() == 0


def test_dead_letter_queue_is_discovered_from_the_redrive_policy(moto_client: Any) -> None:
    url, dlq_url = ensure_queue_with_dlq(moto_client, "mail-status")
    queue = SqsQueue(url, client=moto_client)
    queue.send("bad")
    [message] = queue.receive()

    queue.dead_letter(message, "unknown printer")

    assert queue.dead_letter_queue_url() == dlq_url
    [dead] = SqsQueue(dlq_url, client=moto_client).receive()
    assert dead.attributes["reason"] == "unknown printer"


def test_dead_letter_without_a_dlq_is_rejected(moto_client: Any) -> None:
    url = moto_client.create_queue(QueueName="plain")["QueueUrl"]
    queue = SqsQueue(url, client=moto_client)
    queue.send("bad")
    [message] = queue.receive(visibility_timeout=0)

    with pytest.raises(RequestRejected, match="no redrive policy"):
        queue.dead_letter(message, "why")

    assert [m.body for m in queue.receive()] == ["bad"]


def test_dead_letter_with_bad_handle_raises_after_copying(moto_client: Any) -> None:
    url, dlq_url = ensure_queue_with_dlq(moto_client, "mail-status")
    queue = SqsQueue(url, client=moto_client, dlq_url=dlq_url)
    queue.send("x")
    [message] = queue.receive(visibility_timeout=0)
    broken = type(message)(message.message_id, "bogus", message.body, 1, message.attributes)

    with pytest.raises(RequestRejected) as caught:
        queue.dead_letter(broken, "why")

    assert caught.value.code == "ReceiptHandleIsInvalid"
    assert "copied to the dead-letter queue but not deleted" in str(caught.value)
    assert [m.body for m in SqsQueue(dlq_url, client=moto_client).receive()] == ["x"]
    assert [m.body for m in queue.receive()] == ["x"]


def test_purge_empties_the_queue(moto_client: Any) -> None:
    url, _ = ensure_queue_with_dlq(moto_client, "mail-status")
    queue = SqsQueue(url, client=moto_client)
    queue.send_batch(["a", "b"])

    queue.purge()

    assert queue.approximate_depth() == 0


# -- setup -------------------------------------------------------------------------------


def _attributes(client: Any, url: str) -> dict[str, str]:
    return client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def test_ensure_queue_with_dlq_is_idempotent_and_converges(moto_client: Any) -> None:
    url, dlq_url = ensure_queue_with_dlq(moto_client, "mail-status", 5, 120)
    again = ensure_queue_with_dlq(moto_client, "mail-status", 5, 120)
    assert again == (url, dlq_url)
    assert dlq_url.endswith("/mail-status-dlq")

    dlq_attrs = _attributes(moto_client, dlq_url)
    attrs = _attributes(moto_client, url)
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_attrs["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 5
    assert attrs["VisibilityTimeout"] == "120"
    assert dlq_attrs["MessageRetentionPeriod"] == str(DLQ_RETENTION_SECONDS)

    assert ensure_queue_with_dlq(moto_client, "mail-status", 3, 60) == (url, dlq_url)
    attrs = _attributes(moto_client, url)
    assert int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]) == 3
    assert attrs["VisibilityTimeout"] == "60"


def test_ensure_queue_with_dlq_refuses_fifo_and_bad_counts(moto_client: Any) -> None:
    with pytest.raises(ValueError, match="FIFO"):
        ensure_queue_with_dlq(moto_client, "events.fifo")
    with pytest.raises(ValueError, match="max_receive_count"):
        ensure_queue_with_dlq(moto_client, "events", max_receive_count=0)
    assert moto_client.list_queues().get("QueueUrls", []) == []

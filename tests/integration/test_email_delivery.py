"""Report-email senders: SES (moto for sending, botocore Stubber for SES's error answers, real
sockets for the network failures) and the sandbox outbox (files, idempotency, the SES-shaped
events it hands to its sink)."""

from __future__ import annotations

import email
import email.policy
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from mail_pipeline.domain.email_events import (
    REPORT_HEADER,
    REPORT_TAG,
    REPORT_TAG_BASE32,
    EmailEventKind,
    parse_ses_notification,
)
from mail_pipeline.integrations.email_delivery import (
    EmailSender,
    OutboxEmailSender,
    SendOutcomeUnknown,
    SentEmail,
    SesEmailSender,
    make_ses_client,
    read_email_outbox,
)
from mail_pipeline.integrations.email_delivery.base import MAX_RECIPIENTS
from mail_pipeline.integrations.email_delivery.outbox import sandbox_outcome
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter

CREDENTIALS: dict[str, Any] = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
KEY = "report:17:2026-W10"
T0 = datetime(2026, 3, 9, 7, 0, tzinfo=UTC)


def report(
    to: str = "owner@brand.example.com",
    *,
    sender: str = "Reports <reports@mail-pipeline.example.com>",
    **headers: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Your weekly mail report"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Postcards mailed this week: 1,204.")
    return message


def parsed(raw: bytes | str) -> EmailMessage:
    data = raw.encode() if isinstance(raw, str) else raw
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


# -- SES on moto ---------------------------------------------------------------------------


@pytest.fixture
def moto_ses() -> Iterator[Any]:
    with mock_aws():
        client = make_ses_client(region_name="us-east-1", **CREDENTIALS)
        client.verify_domain_identity(Domain="mail-pipeline.example.com")
        yield client


def sent_raw(index: int = -1) -> Any:
    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages[index]


def test_ses_sends_the_raw_message_with_the_report_header(moto_ses: Any) -> None:
    sender = SesEmailSender(client=moto_ses, configuration_set="reports")
    message = report(Cc="finance@brand.example.com", Bcc="audit@mail-pipeline.example.com")

    sent = sender.send(message, idempotency_key=KEY)

    assert sent.provider == "ses"
    assert sent.message_id
    assert sent.recipients == (
        "owner@brand.example.com",
        "finance@brand.example.com",
        "audit@mail-pipeline.example.com",
    )
    assert message[REPORT_HEADER] == KEY  # stamped on the caller's message
    raw = sent_raw()
    wire = parsed(raw.raw_data)
    assert wire[REPORT_HEADER] == KEY
    assert wire["Bcc"] is None  # a Bcc recipient is in the envelope only
    assert "\r\n" in raw.raw_data
    # moto adds the header addresses to the destinations again; SES sends to Destinations.
    assert set(raw.destinations) == set(sent.recipients)


def test_ses_keeps_a_long_report_key_as_one_plain_header(moto_ses: Any) -> None:
    key = "report:organization-1234567:" + "w" * 100
    assert len(key) == 128

    SesEmailSender(client=moto_ses).send(report(), idempotency_key=key)

    assert f"{REPORT_HEADER}: {key}\r\n" in sent_raw().raw_data


def test_ses_unverified_sender_is_rejected(moto_ses: Any) -> None:
    sender = SesEmailSender(client=moto_ses)

    with pytest.raises(RequestRejected) as caught:
        sender.send(report(sender="someone@unverified.example.org"), idempotency_key=KEY)

    assert caught.value.code == "MessageRejected"
    assert not caught.value.retryable
    assert "unverified.example.org" not in str(caught.value)  # addresses are redacted


def test_ses_client_is_built_on_first_use_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    built: list[dict[str, Any]] = []
    real_client = boto3.client

    def recording_client(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs)
        return real_client(*args, **kwargs)

    monkeypatch.setattr(boto3, "client", recording_client)
    with mock_aws():
        sender = SesEmailSender(region_name="us-east-1", **CREDENTIALS)
        assert built == []
        sender.client.verify_domain_identity(Domain="mail-pipeline.example.com")
        sender.send(report(), idempotency_key="a")
        sender.send(report(), idempotency_key="b")

    assert len(built) == 1
    assert built[0]["config"].retries == {"mode": "standard", "total_max_attempts": 1}


# -- SES: exact requests and SES's error answers (Stubber) ----------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[SesEmailSender, Stubber, list[dict[str, Any]]]]:
    client = make_ses_client(region_name="us-east-1", **CREDENTIALS)
    requests: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.ses.SendRawEmail",
        lambda params, **_: requests.append(params),
    )
    with Stubber(client) as stubber:
        yield SesEmailSender(client=client, configuration_set="reports"), stubber, requests
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("report-17_2026-W10", {"Name": REPORT_TAG, "Value": "report-17_2026-W10"}),
        # ":" is not allowed in an SES tag: the key travels base32-encoded.
        (KEY, {"Name": REPORT_TAG_BASE32, "Value": "OJSXA33SOQ5DCNZ2GIYDENRNK4YTA"}),
    ],
)
def test_ses_request_names_the_configuration_set_and_tags_the_key(
    stubbed: tuple[SesEmailSender, Stubber, list[dict[str, Any]]], key: str, tag: dict[str, str]
) -> None:
    sender, stubber, requests = stubbed
    stubber.add_response("send_raw_email", {"MessageId": "0100018e-ses-id"})

    sent = sender.send(report(Cc="cfo@brand.example.com"), idempotency_key=key)

    assert sent == SentEmail(
        "ses", "0100018e-ses-id", ("owner@brand.example.com", "cfo@brand.example.com")
    )
    [request] = requests
    assert request["ConfigurationSetName"] == "reports"
    assert request["Destinations"] == ["owner@brand.example.com", "cfo@brand.example.com"]
    assert request["Tags"] == [tag]
    assert "Source" not in request
    assert parsed(request["RawMessage"]["Data"])[REPORT_HEADER] == key


def test_ses_source_is_the_envelope_sender_when_configured() -> None:
    client = make_ses_client(region_name="us-east-1", **CREDENTIALS)
    sender = SesEmailSender(client=client, source="bounces@mail-pipeline.example.com")
    with Stubber(client) as stubber:
        stubber.add_response(
            "send_raw_email",
            {"MessageId": "m"},
            {
                "RawMessage": {"Data": ANY},
                "Destinations": ["owner@brand.example.com"],
                "Tags": [{"Name": REPORT_TAG, "Value": "k"}],
                "Source": "bounces@mail-pipeline.example.com",
            },
        )
        sender.send(report(), idempotency_key="k")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("Throttling", 400, RateLimited),  # "Maximum sending rate exceeded."
        ("InternalFailure", 500, VendorUnavailable),
        ("ServiceUnavailable", 503, VendorUnavailable),
        ("MessageRejected", 400, RequestRejected),
        ("MailFromDomainNotVerifiedException", 400, RequestRejected),
        ("ConfigurationSetDoesNotExist", 400, RequestRejected),
        ("AccountSendingPausedException", 400, RequestRejected),
        ("InvalidParameterValue", 400, RequestRejected),
        ("InvalidClientTokenId", 403, AuthenticationFailed),
        ("SignatureDoesNotMatch", 403, AuthenticationFailed),
    ],
)
def test_ses_errors_map_to_typed_errors(
    stubbed: tuple[SesEmailSender, Stubber, list[dict[str, Any]]],
    code: str,
    status: int,
    expected: type[Exception],
) -> None:
    sender, stubber, _ = stubbed
    stubber.add_client_error(
        "send_raw_email",
        service_error_code=code,
        service_message="Email address is not verified: owner@brand.example.com",
        http_status_code=status,
    )

    with pytest.raises(expected) as caught:
        sender.send(report(), idempotency_key=KEY)

    error = caught.value
    assert type(error) is expected
    assert error.code == code  # type: ignore[attr-defined]
    assert error.retryable is (expected in (RateLimited, VendorUnavailable))  # type: ignore[attr-defined]
    assert "SendRawEmail failed: Email address is not verified" in str(error)
    assert "owner@brand.example.com" not in str(error)


def test_ses_without_a_message_id_is_an_unknown_outcome(
    stubbed: tuple[SesEmailSender, Stubber, list[dict[str, Any]]],
) -> None:
    sender, stubber, _ = stubbed
    stubber.add_response("send_raw_email", {"MessageId": ""})

    with pytest.raises(SendOutcomeUnknown) as caught:
        sender.send(report(), idempotency_key=KEY)

    assert not caught.value.retryable


def test_ses_limiter_is_acquired_per_recipient(
    stubbed: tuple[SesEmailSender, Stubber, list[dict[str, Any]]],
) -> None:
    sender, stubber, _ = stubbed
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sender.limiter = SlidingWindowLimiter(2, 1.0, clock=lambda: now[0], sleep=sleep)
    stubber.add_response("send_raw_email", {"MessageId": "m"})

    sender.send(
        report("a@brand.example.com, b@brand.example.com, c@brand.example.com"), idempotency_key="k"
    )

    assert sleeps == [1.0]  # the third recipient waited for the window


# -- SES: the checks every sender makes before sending -------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (report(to=""), "no recipients"),
        (report(to="Jürgen <jürgen@brand.example.com>"), "not a plain ASCII address"),
        (report(to="nobody"), "not a plain ASCII address"),
        (report(sender=""), "needs a From header"),
        (
            report(", ".join(f"r{i}@brand.example.com" for i in range(MAX_RECIPIENTS + 1))),
            "51 recipients; the limit is 50",
        ),
    ],
)
def test_messages_ses_would_refuse_are_refused_before_sending(
    stubbed: tuple[SesEmailSender, Stubber, list[dict[str, Any]]],
    tmp_path: Path,
    message: EmailMessage,
    reason: str,
) -> None:
    sender, _, requests = stubbed
    senders: tuple[EmailSender, ...] = (sender, OutboxEmailSender(tmp_path))
    for each in senders:
        with pytest.raises(RequestRejected, match=reason):
            each.send(message, idempotency_key=KEY)
    assert requests == []
    assert read_email_outbox(tmp_path) == []


def test_a_message_over_ten_megabytes_is_refused(tmp_path: Path) -> None:
    message = report()
    message.add_attachment(b"\0" * (8 * 1024 * 1024), maintype="application", subtype="pdf")

    with pytest.raises(RequestRejected, match="the limit is 10485760"):
        OutboxEmailSender(tmp_path).send(message, idempotency_key=KEY)


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "naïve", "line\nbreak"])
def test_a_bad_report_key_is_a_caller_error(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="a report key must be"):
        OutboxEmailSender(tmp_path).send(report(), idempotency_key=key)


def test_a_message_stamped_for_another_report_is_refused(tmp_path: Path) -> None:
    message = report(**{"X_Mail_Pipeline_Report": "report:other"})

    with pytest.raises(ValueError, match="another report"):
        OutboxEmailSender(tmp_path).send(message, idempotency_key=KEY)

    same = report(**{"X_Mail_Pipeline_Report": KEY})
    OutboxEmailSender(tmp_path).send(same, idempotency_key=KEY)
    assert same.get_all(REPORT_HEADER) == [KEY]


# -- SES: the network ---------------------------------------------------------------------


def test_unreachable_ses_is_vendor_unavailable_and_retryable() -> None:
    client = make_ses_client(
        region_name="us-east-1", endpoint_url="http://127.0.0.1:9", connect_timeout=1, **CREDENTIALS
    )

    with pytest.raises(VendorUnavailable) as caught:
        SesEmailSender(client=client).send(report(), idempotency_key=KEY)

    assert caught.value.retryable


class SilentServer:
    """Accepts connections, reads the request and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.connections = 0
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self.sock.close()


def test_no_answer_after_sending_is_an_unknown_outcome_and_is_not_retried() -> None:
    server = SilentServer()
    try:
        client = make_ses_client(
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{server.port}",
            read_timeout=0.5,
            **CREDENTIALS,
        )
        with pytest.raises(SendOutcomeUnknown) as caught:
            SesEmailSender(client=client).send(report(), idempotency_key=KEY)
    finally:
        server.close()

    assert not caught.value.retryable
    assert "may have been sent" in str(caught.value)
    assert server.connections == 1  # botocore did not send it again


def test_missing_credentials_are_authentication_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = make_ses_client(region_name="us-east-1", endpoint_url="http://127.0.0.1:9")

    with pytest.raises(AuthenticationFailed):
        SesEmailSender(client=client).send(report(), idempotency_key=KEY)


# -- the outbox ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_outbox_writes_the_message_as_ses_would_send_it(tmp_path: Path) -> None:
    outbox = OutboxEmailSender(tmp_path / "outbox", clock=Clock())
    message = report(Bcc="audit@mail-pipeline.example.com", Message_ID="<mine@example.com>")

    sent = outbox.send(message, idempotency_key=KEY)

    [entry] = outbox.entries()
    assert entry.sent == sent
    assert entry.idempotency_key == KEY
    assert entry.sent_at == T0 + timedelta(seconds=1)
    assert entry.name == "20260309T070001000000Z-report_17_2026-W10-" + entry.name[-8:]
    assert sent.provider == "outbox" and sent.message_id.startswith("outbox-")
    assert sent.recipients == ("owner@brand.example.com", "audit@mail-pipeline.example.com")
    wire = parsed(entry.eml_path.read_bytes())
    assert wire[REPORT_HEADER] == KEY
    assert wire["Bcc"] is None
    assert wire["Message-ID"] == f"<{sent.message_id}@outbox.mail-pipeline.invalid>"
    assert wire["Date"] == "Mon, 09 Mar 2026 07:00:01 +0000"
    assert wire.get_content().strip() == "Postcards mailed this week: 1,204."
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted(
        [".lock", f"{entry.name}.eml", f"{entry.name}.json"]
    )


def test_outbox_is_idempotent_by_key(tmp_path: Path) -> None:
    bodies: list[str] = []
    outbox = OutboxEmailSender(tmp_path, bodies.append, clock=Clock())
    first = outbox.send(report(), idempotency_key=KEY)
    files = sorted(tmp_path.iterdir())

    again = outbox.send(report(to="someone-else@brand.example.com"), idempotency_key=KEY)

    assert again == first
    assert sorted(tmp_path.iterdir()) == files
    assert len(bodies) == 1
    # Keys that share a file name part are still different reports.
    other = outbox.send(report(), idempotency_key="report/17/2026-W10")
    assert other.message_id != first.message_id
    assert len(outbox.entries()) == 2


def test_outbox_is_idempotent_across_senders_and_threads(tmp_path: Path) -> None:
    results: list[SentEmail] = []

    def send() -> None:
        results.append(OutboxEmailSender(tmp_path).send(report(), idempotency_key=KEY))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8 and len(set(results)) == 1
    assert len(read_email_outbox(tmp_path)) == 1


def test_outbox_crash_before_the_json_leaves_no_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = OutboxEmailSender(tmp_path, clock=Clock())
    real_replace = os.replace

    def crash_on_json(source: str, target: Any) -> None:
        if str(target).endswith(".json"):
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_on_json)
    with pytest.raises(OSError, match="disk full"):
        outbox.send(report(), idempotency_key=KEY)
    monkeypatch.undo()

    assert outbox.entries() == []
    assert [p.suffix for p in tmp_path.iterdir() if not p.name.startswith(".")] == [".eml"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    # The retry sends it (the orphaned .eml is never listed).
    sent = outbox.send(report(), idempotency_key=KEY)
    assert [entry.sent for entry in outbox.entries()] == [sent]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("owner@brand.example.com", EmailEventKind.DELIVERED),
        ("anyone@bounce.example", EmailEventKind.BOUNCED),
        ("anyone@mx.bounce.example", EmailEventKind.BOUNCED),
        ("anyone@complaint.example", EmailEventKind.COMPLAINED),
        ("bounce@simulator.amazonses.com", EmailEventKind.BOUNCED),
        ("bounce+weekly@simulator.amazonses.com", EmailEventKind.BOUNCED),
        ("complaint@simulator.amazonses.com", EmailEventKind.COMPLAINED),
        ("success@simulator.amazonses.com", EmailEventKind.DELIVERED),
        ("anyone@notbounce.example", EmailEventKind.DELIVERED),
    ],
)
def test_sandbox_outcome_by_address(address: str, kind: EmailEventKind) -> None:
    assert sandbox_outcome(address) == kind


def test_outbox_emits_one_ses_event_per_recipient(tmp_path: Path) -> None:
    bodies: list[str] = []
    outbox = OutboxEmailSender(tmp_path, bodies.append, clock=Clock())
    message = report(
        "owner@brand.example.com, gone@bounce.example",
        Cc="angry@complaint.example",
        Bcc="bounce@simulator.amazonses.com",
    )

    sent = outbox.send(message, idempotency_key=KEY)

    events = [parse_ses_notification(body) for body in bodies]
    assert [(e.kind, e.recipients) for e in events] == [
        (EmailEventKind.DELIVERED, ("owner@brand.example.com",)),
        (EmailEventKind.BOUNCED, ("gone@bounce.example",)),
        (EmailEventKind.COMPLAINED, ("angry@complaint.example",)),
        (EmailEventKind.BOUNCED, ("bounce@simulator.amazonses.com",)),
    ]
    assert {e.message_id for e in events} == {sent.message_id}
    assert {e.report_key for e in events} == {KEY}
    assert {e.occurred_at for e in events} == {T0 + timedelta(seconds=1)}
    assert len({e.event_id for e in events}) == 4
    assert events[1].bounce_type == "Permanent"
    assert events[1].detail == "Permanent/General: smtp; 550 5.1.1 user unknown"
    assert events[2].detail == "complaint: abuse"
    envelope = json.loads(bodies[1])
    assert envelope["Type"] == "Notification"
    record = json.loads(envelope["Message"])
    assert record["eventType"] == "Bounce"
    assert record["mail"]["destination"] == list(sent.recipients)
    assert record["mail"]["tags"][REPORT_TAG_BASE32] == ["OJSXA33SOQ5DCNZ2GIYDENRNK4YTA"]
    assert outbox.entries()[0].notified


def test_outbox_hands_pending_notifications_over_again_after_a_sink_failure(
    tmp_path: Path,
) -> None:
    received: list[str] = []
    failing = True

    def sink(body: str) -> None:
        if failing and received:
            raise ConnectionError("queue down")
        received.append(body)

    outbox = OutboxEmailSender(tmp_path, sink, clock=Clock())
    message = report("a@brand.example.com, b@brand.example.com")
    with pytest.raises(ConnectionError):
        outbox.send(message, idempotency_key=KEY)
    [entry] = outbox.entries()
    assert not entry.notified and len(entry.notifications) == 2
    files = sorted(tmp_path.iterdir())

    failing = False
    sent = outbox.send(message, idempotency_key=KEY)

    assert sent == entry.sent
    assert sorted(tmp_path.iterdir()) == files
    assert received == [entry.notifications[0], *entry.notifications]  # at least once
    assert outbox.entries()[0].notified
    outbox.send(message, idempotency_key=KEY)
    assert len(received) == 3


def test_outbox_feeds_a_local_queue_that_the_parser_reads(tmp_path: Path) -> None:
    queue = LocalQueue(tmp_path / "queues.sqlite", "email-events")
    outbox = OutboxEmailSender(tmp_path / "outbox", queue.send)

    sent = outbox.send(report("gone@bounce.example"), idempotency_key=KEY)

    [message] = queue.receive()
    event = parse_ses_notification(message.body)
    assert (event.kind, event.message_id, event.report_key) == (
        EmailEventKind.BOUNCED,
        sent.message_id,
        KEY,
    )


def test_outbox_without_a_sink_emits_nothing(tmp_path: Path) -> None:
    OutboxEmailSender(tmp_path).send(report(), idempotency_key=KEY)

    [entry] = read_email_outbox(tmp_path)
    assert entry.notifications == () and entry.notified


def test_reading_an_outbox_never_written_to_is_empty(tmp_path: Path) -> None:
    assert read_email_outbox(tmp_path / "missing") == []
    OutboxEmailSender(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()  # construction does no I/O

"""The notification channels: Slack's incoming webhook (respx, with Slack's documented
answers), SMTP (a small SMTP server on 127.0.0.1 in a thread) and the local outbox."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx

from mail_pipeline.domain.alerts import Failure, Notification
from mail_pipeline.integrations.errors import (
    AuthenticationFailed,
    IntegrationError,
    NotFound,
    RateLimited,
    RequestRejected,
    VendorUnavailable,
)
from mail_pipeline.integrations.http import RetryPolicy
from mail_pipeline.integrations.notifications import (
    Outbox,
    SlackWebhook,
    SmtpEmail,
    read_outbox,
)
from mail_pipeline.integrations.notifications.email import RUNS_HEADER
from mail_pipeline.resources.notifications import (
    EmailNotifications,
    OutboxNotifications,
    SlackNotifications,
)

SECRET_PATH = "T0123ABCD/B0456EFGH/s3cr3tT0kenXYZ"
WEBHOOK = f"https://hooks.slack.com/services/{SECRET_PATH}"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)

NOTICE = Notification(
    subject="[mail_pipeline] Run failed: mailing_job (mailing, Acme (org 7))",
    body="Run run-1 failed.\n\nError: RateLimited: lob: too many requests",
    mrkdwn=":rotating_light: *Run failed:* `mailing_job`\n*Error:* `RateLimited`",
    run_ids=("run-1",),
)


# -- Slack -----------------------------------------------------------------------------------------


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` that only move when slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def slack(clock: FakeClock, **kwargs: object) -> SlackWebhook:
    return SlackWebhook(WEBHOOK, sleep=clock.sleep, clock=clock, **kwargs)  # type: ignore[arg-type]


def ok() -> httpx.Response:
    return httpx.Response(200, text="ok", headers={"content-type": "text/html"})


def refused(status: int, reason: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, text=reason, headers={"content-type": "text/html", **headers})


def assert_no_webhook_secret(error: BaseException) -> None:
    for text in (str(error), repr(error), getattr(error, "message", "")):
        assert SECRET_PATH not in text
        assert "s3cr3t" not in text


@respx.mock
def test_slack_posts_text_and_blocks_as_json(clock: FakeClock) -> None:
    route = respx.post(WEBHOOK).mock(return_value=ok())
    slack(clock).send(NOTICE)

    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json"
    payload = json.loads(request.content)
    assert payload["text"] == NOTICE.mrkdwn
    header, section = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": NOTICE.subject}}
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": NOTICE.mrkdwn}}
    assert clock.sleeps == []


@respx.mock
def test_slack_without_blocks_sends_text_only(clock: FakeClock) -> None:
    route = respx.post(WEBHOOK).mock(return_value=ok())
    slack(clock, blocks=False).send(NOTICE)
    assert json.loads(route.calls.last.request.content) == {"text": NOTICE.mrkdwn}


@respx.mock
def test_slack_splits_a_long_message_into_sections_within_slacks_limit(clock: FakeClock) -> None:
    long = Notification("s", "b", "\n".join(f"line {n} " + "x" * 90 for n in range(100)), ("r",))
    route = respx.post(WEBHOOK).mock(return_value=ok())
    slack(clock).send(long)
    sections = json.loads(route.calls.last.request.content)["blocks"][1:]
    assert len(sections) > 1
    assert all(len(block["text"]["text"]) <= 3000 for block in sections)
    assert "\n".join(block["text"]["text"] for block in sections) == long.mrkdwn


@respx.mock
def test_slack_invalid_payload_raises_with_the_reason_and_without_the_url(
    clock: FakeClock,
) -> None:
    route = respx.post(WEBHOOK).mock(return_value=refused(400, "invalid_payload"))
    with pytest.raises(RequestRejected) as caught:
        slack(clock).send(NOTICE)
    assert caught.value.code == "invalid_payload"
    assert caught.value.status_code == 400
    assert "invalid_payload" in str(caught.value)
    assert not caught.value.retryable
    assert_no_webhook_secret(caught.value)
    assert route.call_count == 1 and clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (400, "no_text", RequestRejected),
        (403, "action_prohibited", AuthenticationFailed),
        (404, "no_service", NotFound),
        (404, "channel_not_found", NotFound),
        (410, "channel_is_archived", NotFound),
    ],
)
@respx.mock
def test_slack_permanent_errors_are_typed_and_not_retried(
    clock: FakeClock, status: int, reason: str, kind: type[IntegrationError]
) -> None:
    route = respx.post(WEBHOOK).mock(return_value=refused(status, reason))
    with pytest.raises(kind) as caught:
        slack(clock).send(NOTICE)
    assert caught.value.code == reason
    assert_no_webhook_secret(caught.value)
    assert route.call_count == 1 and clock.sleeps == []


@respx.mock
def test_slack_429_waits_what_retry_after_asks_then_posts(clock: FakeClock) -> None:
    route = respx.post(WEBHOOK).mock(
        side_effect=[refused(429, "rate_limited", **{"Retry-After": "7"}), ok()]
    )
    slack(clock).send(NOTICE)
    assert route.call_count == 2
    assert clock.sleeps == [7.0]


@respx.mock
def test_slack_a_retry_after_beyond_the_limit_is_not_waited_out(clock: FakeClock) -> None:
    route = respx.post(WEBHOOK).mock(
        return_value=refused(429, "rate_limited", **{"Retry-After": "120"})
    )
    with pytest.raises(RateLimited) as caught:
        slack(clock).send(NOTICE)
    assert caught.value.retry_after == 120.0
    assert caught.value.retryable
    assert route.call_count == 1 and clock.sleeps == []


@respx.mock
def test_slack_stops_when_the_next_wait_would_pass_the_total_cap(clock: FakeClock) -> None:
    route = respx.post(WEBHOOK).mock(
        return_value=refused(429, "rate_limited", **{"Retry-After": "15"})
    )
    with pytest.raises(RateLimited):
        slack(clock, max_total_wait=20.0).send(NOTICE)
    assert clock.sleeps == [15.0]
    assert route.call_count == 2


@respx.mock
def test_slack_a_500_storm_gives_up_after_the_bounded_retries(clock: FakeClock) -> None:
    route = respx.post(WEBHOOK).mock(return_value=refused(500, "rollup_error"))
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0)
    with pytest.raises(VendorUnavailable) as caught:
        slack(clock, retry=policy).send(NOTICE)
    assert route.call_count == 4
    assert len(clock.sleeps) == 3
    # jittered exponential backoff: attempt n waits between half and all of 2^(n-1) seconds
    for attempt, waited in enumerate(clock.sleeps, start=1):
        ceiling = 2.0 ** (attempt - 1)
        assert ceiling / 2 <= waited <= ceiling
    assert caught.value.code == "rollup_error" and caught.value.retryable
    assert_no_webhook_secret(caught.value)


@respx.mock
def test_slack_retries_a_timeout_and_a_dropped_connection(clock: FakeClock) -> None:
    route = respx.post(WEBHOOK).mock(
        side_effect=[httpx.ConnectTimeout("timed out"), httpx.ConnectError("reset"), ok()]
    )
    slack(clock).send(NOTICE)
    assert route.call_count == 3 and len(clock.sleeps) == 2


@respx.mock
def test_slack_timeouts_to_the_end_raise_vendor_unavailable_without_the_url(
    clock: FakeClock,
) -> None:
    respx.post(WEBHOOK).mock(side_effect=httpx.ReadTimeout(f"timed out reading {WEBHOOK}"))
    with pytest.raises(VendorUnavailable) as caught:
        slack(clock).send(NOTICE)
    assert_no_webhook_secret(caught.value)


@respx.mock
def test_slack_never_logs_the_webhook_url(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    respx.post(WEBHOOK).mock(side_effect=[refused(503, "busy", **{"Retry-After": "1"}), ok()])
    client = slack(clock)
    client.send(NOTICE)
    assert "hooks.slack.com" in caplog.text  # httpx did log the request, masked
    assert SECRET_PATH not in caplog.text
    assert SECRET_PATH not in repr(client)


def test_slack_refuses_a_webhook_that_is_not_a_url() -> None:
    with pytest.raises(ValueError) as caught:
        SlackWebhook("hooks.slack.com/services/" + SECRET_PATH)
    assert SECRET_PATH not in str(caught.value)


# -- SMTP ------------------------------------------------------------------------------------------


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class SmtpBehaviour:
    """How the test server answers: what it advertises and refuses."""

    auth: bool = False
    mail_reply: str = "250 2.1.0 OK"
    refuse: set[str] = field(default_factory=set)
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


class _SmtpHandler(socketserver.StreamRequestHandler):
    """A minimal SMTP responder: EHLO/HELO, AUTH (always refused), MAIL, RCPT, DATA, RSET,
    NOOP, QUIT. Enough for smtplib, no STARTTLS."""

    server: _SmtpServer

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        behaviour = self.server.behaviour
        self.reply("220 test.local ESMTP ready")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            behaviour.commands.append(verb)
            if verb in ("EHLO", "HELO"):
                extensions = ["test.local", "8BITMIME", "SIZE 1000000"]
                if behaviour.auth:
                    extensions.append("AUTH PLAIN LOGIN")
                for extension in extensions[:-1]:
                    self.reply(f"250-{extension}")
                self.reply(f"250 {extensions[-1]}")
            elif verb == "AUTH":
                self.reply("535 5.7.8 Authentication credentials invalid")
            elif verb == "MAIL":
                sender = command.split(":", 1)[1].split()[0].strip("<>")
                self.reply(behaviour.mail_reply)
            elif verb == "RCPT":
                address = command.split(":", 1)[1].split()[0].strip("<>")
                if address in behaviour.refuse:
                    self.reply("550 5.1.1 mailbox unavailable")
                else:
                    recipients.append(address)
                    self.reply("250 2.1.5 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                behaviour.messages.append(Received(sender, recipients, b"".join(lines)))
                sender, recipients = "", []
                self.reply("250 2.0.0 OK queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 2.0.0 OK")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not recognized")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: SmtpBehaviour) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.behaviour = behaviour

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def smtp_server() -> Iterator[_SmtpServer]:
    server = _SmtpServer(SmtpBehaviour())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def smtp(server: _SmtpServer, **kwargs: object) -> SmtpEmail:
    settings: dict[str, object] = {
        "sender": "alerts@mail-pipeline.test",
        "recipients": ["oncall@mail-pipeline.test", "ops@mail-pipeline.test"],
        "starttls": False,
        "timeout": 5.0,
    }
    settings.update(kwargs)
    return SmtpEmail("127.0.0.1", server.port, **settings)  # type: ignore[arg-type]


def test_smtp_delivers_subject_body_and_run_ids(smtp_server: _SmtpServer) -> None:
    smtp(smtp_server).send(NOTICE)

    [received] = smtp_server.behaviour.messages
    assert received.sender == "alerts@mail-pipeline.test"
    assert received.recipients == ["oncall@mail-pipeline.test", "ops@mail-pipeline.test"]
    # SMTP sends CRLF line ends; the parser keeps the CR of each body line
    data = received.data.replace(b"\r\n", b"\n")
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == NOTICE.subject
    assert message["From"] == "alerts@mail-pipeline.test"
    assert message["To"] == "oncall@mail-pipeline.test, ops@mail-pipeline.test"
    assert message[RUNS_HEADER] == "run-1"
    assert message.get_content_type() == "text/plain"
    assert message.get_content().rstrip("\n") == NOTICE.body
    assert smtp_server.behaviour.commands[-1] == "QUIT"


def test_smtp_starttls_against_a_server_without_it_is_refused_before_sending(
    smtp_server: _SmtpServer,
) -> None:
    with pytest.raises(RequestRejected, match="STARTTLS"):
        smtp(smtp_server, starttls=True).send(NOTICE)
    assert smtp_server.behaviour.messages == []
    assert "MAIL" not in smtp_server.behaviour.commands


def test_smtp_refused_login_is_authentication_failed_without_the_password(
    smtp_server: _SmtpServer,
) -> None:
    smtp_server.behaviour.auth = True
    with pytest.raises(AuthenticationFailed) as caught:
        smtp(smtp_server, username="alerts", password="hunter2-pw").send(NOTICE)
    assert "535" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert smtp_server.behaviour.messages == []


def test_smtp_every_recipient_refused_is_request_rejected(smtp_server: _SmtpServer) -> None:
    smtp_server.behaviour.refuse = {"oncall@mail-pipeline.test", "ops@mail-pipeline.test"}
    with pytest.raises(RequestRejected) as caught:
        smtp(smtp_server).send(NOTICE)
    assert "550" in str(caught.value)
    assert "oncall@" not in str(caught.value)  # no addresses in the error


def test_smtp_one_recipient_refused_still_delivers_to_the_others(
    smtp_server: _SmtpServer,
) -> None:
    smtp_server.behaviour.refuse = {"ops@mail-pipeline.test"}
    smtp(smtp_server).send(NOTICE)
    [received] = smtp_server.behaviour.messages
    assert received.recipients == ["oncall@mail-pipeline.test"]


@pytest.mark.parametrize(
    ("reply", "kind", "retryable"),
    [
        ("451 4.3.0 Try again later", VendorUnavailable, True),
        ("554 5.7.1 Sender rejected", RequestRejected, False),
    ],
)
def test_smtp_4xx_is_retryable_and_5xx_is_not(
    smtp_server: _SmtpServer, reply: str, kind: type[IntegrationError], retryable: bool
) -> None:
    smtp_server.behaviour.mail_reply = reply
    with pytest.raises(kind) as caught:
        smtp(smtp_server).send(NOTICE)
    assert caught.value.retryable is retryable
    assert reply.split()[0] in str(caught.value)


def test_smtp_no_server_is_vendor_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notifier = SmtpEmail(
        "127.0.0.1", port, sender="a@x.test", recipients=["b@x.test"], starttls=False, timeout=2
    )
    with pytest.raises(VendorUnavailable):
        notifier.send(NOTICE)


def test_smtp_refuses_a_password_in_clear_text_over_a_network() -> None:
    with pytest.raises(ValueError, match="clear text"):
        SmtpEmail(
            "smtp.example.com",
            sender="a@x.test",
            recipients=["b@x.test"],
            username="u",
            password="p",
            starttls=False,
        )
    with pytest.raises(ValueError, match="both"):
        SmtpEmail("smtp.example.com", sender="a@x.test", recipients=["b@x.test"], username="u")


# -- the outbox ------------------------------------------------------------------------------------


class StepClock:
    def __init__(self, *moments: datetime) -> None:
        self.moments = list(moments)

    def __call__(self) -> datetime:
        return self.moments.pop(0)


def test_the_outbox_writes_json_and_eml_and_reads_them_back(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    outbox = Outbox(folder, clock=StepClock(T0))
    written = outbox.write(NOTICE)

    assert written.json_path.parent == folder and written.eml_path.exists()
    document = json.loads(written.json_path.read_text())
    assert document["subject"] == NOTICE.subject
    assert document["body"] == NOTICE.body
    assert document["run_ids"] == ["run-1"]
    assert document["sent_at"] == "2026-03-02T09:30:00+00:00"
    message = email.message_from_bytes(written.eml_path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == NOTICE.subject
    assert NOTICE.body in message.get_content()

    [entry] = read_outbox(folder)
    assert entry == written
    assert entry.notification() == NOTICE
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]


def test_outbox_names_sort_by_time_whatever_the_order_of_writing(tmp_path: Path) -> None:
    later, earlier = T0 + timedelta(seconds=1, microseconds=5), T0 + timedelta(microseconds=999)
    outbox = Outbox(tmp_path, clock=StepClock(later, earlier, T0 + timedelta(hours=1)))
    for subject in ("second", "first", "third"):
        outbox.send(Notification(subject, "b", "m", (subject,)))
    entries = outbox.entries()
    assert [entry.subject for entry in entries] == ["first", "second", "third"]
    assert [entry.sent_at for entry in entries] == sorted(entry.sent_at for entry in entries)


def test_outbox_lists_only_complete_messages(tmp_path: Path) -> None:
    Outbox(tmp_path, clock=StepClock(T0)).send(NOTICE)
    (tmp_path / "20260302T093001000000Z-run-deadbeef.eml").write_text("orphan of a crash")
    (tmp_path / ".tmp-abc.json").write_text("{half")
    assert [entry.subject for entry in read_outbox(tmp_path)] == [NOTICE.subject]


def test_an_outbox_never_written_to_is_empty(tmp_path: Path) -> None:
    assert read_outbox(tmp_path / "nothing-here") == []


def test_planned_failures_land_in_the_outbox_once(tmp_path: Path) -> None:
    """The sensor's loop: plan, send, mark the sent runs; the next tick sends nothing."""
    failures = [
        Failure(f"run-{n}", "sync_organization_job", "sync", 7, "Acme", "boom", T0)
        for n in range(2)
    ]
    resource = OutboxNotifications(folder=str(tmp_path), ui_base_url="http://localhost:3000")
    notified: set[str] = set()
    for _tick in range(2):
        for notification in resource.plan(failures, notified):
            resource.notifier().send(notification)
            notified.update(notification.run_ids)
    entries = read_outbox(tmp_path)
    assert sorted(run_id for entry in entries for run_id in entry.run_ids) == ["run-0", "run-1"]
    assert "http://localhost:3000/runs/run-0" in entries[0].body + entries[1].body


def test_the_resources_build_their_channels() -> None:
    slack_notifier = SlackNotifications(webhook_url=WEBHOOK).notifier()
    assert isinstance(slack_notifier, SlackWebhook)
    assert SECRET_PATH not in repr(SlackNotifications(webhook_url=WEBHOOK))
    email_notifier = EmailNotifications(
        host="smtp.example.com", sender="a@x.test", recipients=["b@x.test"]
    ).notifier()
    assert isinstance(email_notifier, SmtpEmail) and email_notifier.starttls
    assert isinstance(OutboxNotifications(folder="/tmp/outbox").notifier(), Outbox)
    slack_notifier.close()

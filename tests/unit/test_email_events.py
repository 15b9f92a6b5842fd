"""Reading SES's delivery events off the email-events queue: both SES formats (identity
notifications and event publishing), raw or in an SNS envelope, every kind, the report key
from the header or the tag, and hostile bodies refused with reasons a person can read."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail_pipeline.domain.email_events import (
    MAX_DEPTH,
    MAX_DETAIL_LENGTH,
    REPORT_HEADER,
    REPORT_TAG,
    REPORT_TAG_BASE32,
    EmailEvent,
    EmailEventKind,
    MalformedEmailEvent,
    UnsupportedEmailEvent,
    check_report_key,
    parse_ses_notification,
    report_tag,
    ses_notification,
    ses_notification_body,
    ses_time,
)

K = EmailEventKind
KEY = "report:17:2026-W10"
SENT_AT = datetime(2026, 3, 9, 7, 0, 0, 12000, tzinfo=UTC)
LATER = SENT_AT + timedelta(seconds=3)

# The event-publishing Bounce record of SES's documentation ("Examples of event data that
# Amazon SES publishes to Amazon SNS"), headers shortened.
DOCS_BOUNCE_EVENT: dict[str, Any] = {
    "eventType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "recipient@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "timestamp": "2017-08-05T00:41:02.669Z",
        "feedbackId": "01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
        "reportingMTA": "dsn; mta.example.com",
    },
    "mail": {
        "timestamp": "2017-08-05T00:40:02.012Z",
        "source": "Sender Name <sender@example.com>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
        "sendingAccountId": "123456789012",
        "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
        "destination": ["recipient@example.com"],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "Sender Name <sender@example.com>"},
            {"name": "To", "value": "recipient@example.com"},
            {"name": "Subject", "value": "Message sent from Amazon SES"},
        ],
        "commonHeaders": {
            "from": ["Sender Name <sender@example.com>"],
            "to": ["recipient@example.com"],
            "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
            "subject": "Message sent from Amazon SES",
        },
        "tags": {
            "ses:configuration-set": ["ConfigSet"],
            "ses:source-ip": ["192.0.2.0"],
            "ses:from-domain": ["example.com"],
            "ses:caller-identity": ["ses_user"],
        },
    },
}

# An identity-notification Delivery modelled on SES's documentation ("Amazon SNS notification
# examples for Amazon SES"), without the original headers.
DOCS_DELIVERY_NOTIFICATION: dict[str, Any] = {
    "notificationType": "Delivery",
    "mail": {
        "timestamp": "2016-01-27T14:59:38.237Z",
        "messageId": "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
        "source": "john@example.com",
        "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
        "sourceIp": "127.0.3.0",
        "sendingAccountId": "123456789012",
        "callerIdentity": "IAM_user_or_role_name",
        "destination": ["jane@example.com"],
    },
    "delivery": {
        "timestamp": "2016-01-27T14:59:38.237Z",
        "recipients": ["jane@example.com"],
        "processingTimeMillis": 546,
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "smtpResponse": "250 ok:  Message 64111812 accepted",
        "remoteMtaIp": "127.0.2.0",
    },
}

# A DeliveryDelay record modelled on SES's documentation.
DOCS_DELAY_EVENT: dict[str, Any] = {
    "eventType": "DeliveryDelay",
    "mail": {
        "timestamp": "2020-06-16T00:15:40.641Z",
        "source": "sender@example.com",
        "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
        "destination": ["recipient@example.com"],
        "headersTruncated": False,
        "tags": {"ses:configuration-set": ["ConfigSet"]},
    },
    "deliveryDelay": {
        "timestamp": "2020-06-16T00:25:40.095Z",
        "delayType": "TransientCommunicationFailure",
        "expirationTime": "2020-06-16T00:25:40.914Z",
        "delayedRecipients": [
            {
                "emailAddress": "recipient@example.com",
                "status": "4.4.1",
                "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
            }
        ],
    },
}


def record(kind: EmailEventKind = K.DELIVERED, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "message_id": "0100018e-ses-message",
        "destination": ["owner@brand.example.com", "cfo@brand.example.com"],
        "sent_at": SENT_AT,
        "occurred_at": LATER,
        "headers": [("From", "reports@mail-pipeline.example.com"), (REPORT_HEADER, KEY)],
        "tags": dict([report_tag(KEY)]),
    }
    fields.update(overrides)
    return ses_notification(kind, **fields)


def envelope(message: Any, **fields: Any) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "sns-1", "Message": message, **fields})


# -- the documented examples ----------------------------------------------------------------


def test_the_documented_bounce_event() -> None:
    event = parse_ses_notification(json.dumps(DOCS_BOUNCE_EVENT))

    assert event.kind is K.BOUNCED
    assert event.message_id == "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
    assert event.occurred_at == datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC)
    assert event.recipients == ("recipient@example.com",)
    assert event.bounce_type == "Permanent"
    assert event.detail == "Permanent/General: smtp; 550 5.1.1 user unknown"
    assert event.report_key is None


def test_the_documented_delivery_notification_in_its_sns_envelope() -> None:
    body = envelope(json.dumps(DOCS_DELIVERY_NOTIFICATION))

    event = parse_ses_notification(body)

    assert event == EmailEvent(
        kind=K.DELIVERED,
        message_id="0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
        event_id="sns-1",
        occurred_at=datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC),
        recipients=("jane@example.com",),
        detail="250 ok: Message 64111812 accepted",
    )


def test_the_documented_delivery_delay_event() -> None:
    event = parse_ses_notification(json.dumps(DOCS_DELAY_EVENT))

    assert event.kind is K.DELAYED
    assert event.recipients == ("recipient@example.com",)
    assert event.detail == (
        "TransientCommunicationFailure: smtp; 421 4.4.1 Unable to connect to remote host"
    )


# -- every kind, both formats, raw and wrapped ------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "occurred_at", "recipients", "bounce_type", "detail"),
    [
        (K.SENT, SENT_AT, ("owner@brand.example.com", "cfo@brand.example.com"), None, None),
        (K.DELIVERED, LATER, ("cfo@brand.example.com",), None, "250 2.6.0 Message received"),
        (
            K.BOUNCED,
            LATER,
            ("cfo@brand.example.com",),
            "Permanent",
            "Permanent/General: smtp; 550 5.1.1 user unknown",
        ),
        (K.COMPLAINED, LATER, ("cfo@brand.example.com",), None, "complaint: abuse"),
        (
            K.REJECTED,
            SENT_AT,
            ("owner@brand.example.com", "cfo@brand.example.com"),
            None,
            "Bad content",
        ),
        (
            K.DELAYED,
            LATER,
            ("cfo@brand.example.com",),
            None,
            "TransientCommunicationFailure: smtp; 421 4.4.1 Unable to connect to remote host",
        ),
    ],
)
@pytest.mark.parametrize("wrapped", [True, False], ids=["sns", "raw"])
def test_each_event_publishing_kind(
    kind: EmailEventKind,
    occurred_at: datetime,
    recipients: tuple[str, ...],
    bounce_type: str | None,
    detail: str | None,
    wrapped: bool,
) -> None:
    ses_record = record(kind, recipients=["cfo@brand.example.com"])
    body = ses_notification_body(ses_record, sns_message_id="sns-42" if wrapped else None)

    event = parse_ses_notification(body)

    assert event.kind is kind
    assert event.message_id == "0100018e-ses-message"
    assert event.occurred_at == occurred_at
    assert event.recipients == recipients
    assert event.bounce_type == bounce_type
    assert event.detail == detail
    assert event.report_key == KEY
    if wrapped:
        assert event.event_id == "sns-42"
    else:
        assert event.event_id.startswith("sha256:") and len(event.event_id) == 71


@pytest.mark.parametrize("kind", [K.DELIVERED, K.BOUNCED, K.COMPLAINED])
def test_each_notification_kind(kind: EmailEventKind) -> None:
    ses_record = record(kind, event_publishing=False)
    assert (
        ses_record["notificationType"]
        == {
            K.DELIVERED: "Delivery",
            K.BOUNCED: "Bounce",
            K.COMPLAINED: "Complaint",
        }[kind]
    )
    assert "tags" not in ses_record["mail"]

    event = parse_ses_notification(ses_notification_body(ses_record, sns_message_id="n-1"))

    assert (event.kind, event.event_id, event.report_key) == (kind, "n-1", KEY)


def test_notifications_without_the_original_headers_have_no_report_key() -> None:
    ses_record = record(K.DELIVERED, event_publishing=False, headers=())
    assert "headers" not in ses_record["mail"]

    assert parse_ses_notification(json.dumps(ses_record)).report_key is None


@pytest.mark.parametrize("kind", [K.SENT, K.REJECTED, K.DELAYED])
def test_notifications_have_only_three_types(kind: EmailEventKind) -> None:
    with pytest.raises(ValueError, match="event_publishing=True"):
        record(kind, event_publishing=False)


def test_a_bounce_names_each_diagnostic_once_and_a_transient_one_says_so() -> None:
    ses_record = record(K.BOUNCED, bounce_type="Transient", bounce_subtype="MailboxFull")
    ses_record["bounce"]["bouncedRecipients"][1]["diagnosticCode"] = "smtp; 552 mailbox full"

    event = parse_ses_notification(json.dumps(ses_record))

    assert event.bounce_type == "Transient"
    assert event.detail == (
        "Transient/MailboxFull: smtp; 550 5.1.1 user unknown; smtp; 552 mailbox full"
    )
    assert event.recipients == ("owner@brand.example.com", "cfo@brand.example.com")


def test_a_bounce_without_a_dsn_and_a_complaint_without_a_type() -> None:
    bounce = parse_ses_notification(json.dumps(record(K.BOUNCED, diagnostic_code=None)))
    complaint = parse_ses_notification(
        json.dumps(record(K.COMPLAINED, complaint_feedback_type=None))
    )

    assert bounce.detail == "Permanent/General"
    assert complaint.detail == "complaint"


def test_a_long_detail_is_cut_and_unstorable_characters_replaced() -> None:
    ses_record = record(K.DELIVERED, smtp_response="250 ok\x00 " + "x" * 1000)

    detail = parse_ses_notification(json.dumps(ses_record)).detail

    assert detail is not None
    assert len(detail) == MAX_DETAIL_LENGTH and detail.endswith("\u2026")
    assert detail.startswith("250 ok\ufffd xxx")


# -- ids and times -------------------------------------------------------------------------


def test_event_id_is_stable_for_a_redelivered_body() -> None:
    body = json.dumps(record(K.DELIVERED))
    other = json.dumps(record(K.DELIVERED, occurred_at=LATER + timedelta(seconds=1)))

    first, again, different = (parse_ses_notification(b) for b in (body, body, other))

    assert first.event_id == again.event_id != different.event_id


def test_an_envelope_without_a_message_id_falls_back_to_the_hash() -> None:
    body = json.dumps({"Type": "Notification", "Message": json.dumps(record())})

    assert parse_ses_notification(body).event_id.startswith("sha256:")


def test_times_with_an_offset_become_utc() -> None:
    ses_record = record(K.DELIVERED)
    ses_record["delivery"]["timestamp"] = "2026-03-09T09:00:03.012+02:00"

    occurred_at = parse_ses_notification(json.dumps(ses_record)).occurred_at

    assert occurred_at == LATER and occurred_at.tzinfo is UTC


def test_ses_time_is_milliseconds_and_z() -> None:
    assert ses_time(datetime(2017, 8, 5, 0, 41, 2, 669123, tzinfo=UTC)) == (
        "2017-08-05T00:41:02.669Z"
    )
    assert ses_time(datetime(2017, 8, 5, 2, 41, tzinfo=timezone(timedelta(hours=2)))) == (
        "2017-08-05T00:41:00.000Z"
    )
    with pytest.raises(ValueError, match="time zone"):
        ses_time(datetime(2017, 8, 5))


# -- the report key ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "tag"),
    [
        ("report-17_2026-W10", (REPORT_TAG, "report-17_2026-W10")),
        (KEY, (REPORT_TAG_BASE32, "OJSXA33SOQ5DCNZ2GIYDENRNK4YTA")),
    ],
)
def test_report_tags_use_only_what_ses_allows(key: str, tag: tuple[str, str]) -> None:
    assert report_tag(key) == tag


def test_the_longest_key_fits_in_a_tag() -> None:
    name, value = report_tag("~" * 128)

    assert name == REPORT_TAG_BASE32
    assert len(value) == 205 <= 256


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
    )
)
def test_report_tags_round_trip(key: str) -> None:
    name, value = report_tag(key)
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    ses_record = record(K.DELIVERED, headers=(), tags={name: [value]})

    assert parse_ses_notification(json.dumps(ses_record)).report_key == key


def test_the_header_wins_over_the_tag_and_names_match_in_any_case() -> None:
    ses_record = record(
        K.DELIVERED,
        headers=[("x-mail-pipeline-report", " report:from-header ")],
        tags={REPORT_TAG: ["from-tag"]},
    )

    assert parse_ses_notification(json.dumps(ses_record)).report_key == "report:from-header"


@pytest.mark.parametrize("key", ["", " ", "a b", "x" * 129, "caf\u00e9", "tab\there", None, 17])
def test_check_report_key_refuses(key: Any) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        check_report_key(key)


# -- what is not an email event -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            json.dumps(
                {
                    "Type": "SubscriptionConfirmation",
                    "MessageId": "x",
                    "Message": "You have chosen to subscribe...",
                    "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Confirm",
                }
            ),
            "an SNS 'SubscriptionConfirmation' message, not a notification: it carries no "
            "email event (confirm the subscription at its SubscribeURL)",
        ),
        (
            json.dumps({"Type": "UnsubscribeConfirmation", "Message": "..."}),
            "an SNS 'UnsubscribeConfirmation' message",
        ),
        (
            envelope(json.dumps({"eventType": "Open", "mail": {}, "open": {}})),
            "SES eventType 'Open' is not an email event the pipeline tracks (it tracks Send, "
            "Delivery, Bounce, Complaint, Reject, DeliveryDelay)",
        ),
        (
            json.dumps({"eventType": "Rendering Failure", "mail": {}}),
            "'Rendering Failure' is not an email event",
        ),
        (
            envelope(
                json.dumps(
                    {
                        "notificationType": "AmazonSnsSubscriptionSucceeded",
                        "message": "You have successfully subscribed your Amazon SNS topic",
                    }
                )
            ),
            "SES notificationType 'AmazonSnsSubscriptionSucceeded' is not an email event",
        ),
        (
            json.dumps({"notificationType": "Send", "mail": record(K.SENT)["mail"], "send": {}}),
            "notificationType 'Send' is not an email event the pipeline tracks (it tracks "
            "Delivery, Bounce, Complaint)",
        ),
    ],
)
def test_messages_that_are_not_tracked_events(body: str, reason: str) -> None:
    with pytest.raises(UnsupportedEmailEvent) as caught:
        parse_ses_notification(body)

    assert reason in str(caught.value)
    assert isinstance(caught.value, MalformedEmailEvent)


# -- malformed bodies ----------------------------------------------------------------------


def broken(path: tuple[str | int, ...], value: Any = ..., kind: EmailEventKind = K.BOUNCED) -> str:
    """A valid record with the value at ``path`` replaced (``...``: removed)."""
    ses_record = copy.deepcopy(record(kind))
    target: Any = ses_record
    for step in path[:-1]:
        target = target[step]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(ses_record)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "the message body is not JSON"),
        ("<xml/>", "the message body is not JSON"),
        ('{"eventType": ' + "1" * 5000 + "}", "the message body is not JSON"),
        ("[" * 100_000 + "]" * 100_000, "the message body is nested too deep to decode"),
        (json.dumps([[[1]]]), "the message body is a list, not an object"),
        ("null", "the message body is null, not an object"),
        (json.dumps({"mail": {}}), "neither eventType nor notificationType"),
        (json.dumps({"eventType": 7}), "eventType is a number, not text"),
        (envelope(None), "the SNS notification's Message is null, not text"),
        (envelope({"eventType": "Delivery"}), "the SNS notification's Message is an object"),
        (envelope("not json"), "the SNS Message is not JSON"),
        (envelope('"just text"'), "the SNS Message is 'just text', not an object"),
        (envelope(json.dumps(record()), MessageId=""), "the SNS MessageId is '', not non-empty"),
        (
            json.dumps({"a": json.loads("[" * 40 + "]" * 40)}),
            f"nested more than {MAX_DEPTH} levels deep",
        ),
        (broken(("mail",)), "mail is null, not an object"),
        (broken(("mail", "messageId")), "mail.messageId is null, not non-empty text"),
        (broken(("mail", "messageId"), "  "), "mail.messageId is '  ', not non-empty text"),
        (broken(("mail", "messageId"), "a\x00b"), "mail.messageId holds U+0000"),
        (broken(("mail", "messageId"), "m" * 257), "mail.messageId is 257 characters"),
        (broken(("bounce",)), "bounce is null, not an object"),
        (broken(("bounce", "timestamp")), "bounce.timestamp is null, not an ISO 8601 time"),
        (
            broken(("bounce", "timestamp"), "yesterday"),
            "bounce.timestamp 'yesterday' is not an ISO 8601 time",
        ),
        (
            broken(("bounce", "timestamp"), "2026-03-09T07:00:00"),
            "bounce.timestamp '2026-03-09T07:00:00' has no time zone",
        ),
        (
            broken(("bounce", "timestamp"), "0001-01-01T00:00:00+01:00"),
            "is out of range in UTC",
        ),
        (broken(("bounce", "bounceType")), "bounce.bounceType is null"),
        (
            broken(("bounce", "bouncedRecipients"), []),
            "bounce.bouncedRecipients is a list, not a list of recipients",
        ),
        (
            broken(("bounce", "bouncedRecipients", 0), "x@example.com"),
            "an entry of bounce.bouncedRecipients is 'x@example.com', not an object",
        ),
        (
            broken(("bounce", "bouncedRecipients", 0, "emailAddress"), {"$": 1}),
            "an emailAddress in bounce.bouncedRecipients is an object, not non-empty text",
        ),
        (
            broken(("delivery", "recipients"), "jane@example.com", K.DELIVERED),
            "delivery.recipients is 'jane@example.com', not a list of addresses",
        ),
        (
            broken(("mail", "destination"), [None], K.SENT),
            "an address in mail.destination is null",
        ),
        (broken(("send",), [], K.SENT), "send is a list, not an object"),
        (broken(("mail", "headers"), {"From": "x"}), "mail.headers is an object, not a list"),
        (broken(("mail", "headers", 0), "From: x"), "mail.headers holds an entry without a name"),
        (
            broken(("mail", "headers", 1, "value"), "not a key"),
            f"the {REPORT_HEADER} header is not a report key: 'not a key'",
        ),
        (
            broken(("mail", "headers", 1, "value"), ["k"]),
            f"the {REPORT_HEADER} header is a list, not text",
        ),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(MalformedEmailEvent) as caught:
        parse_ses_notification(body)

    assert reason in str(caught.value)
    assert not isinstance(caught.value, UnsupportedEmailEvent)


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        (["x"], "mail.tags is a list, not an object"),
        ({REPORT_TAG: "k"}, "the mail-pipeline-report tag is 'k', not a list of text"),
        ({REPORT_TAG: []}, "not a list of text"),
        ({REPORT_TAG_BASE32: ["!!!"]}, "the mail-pipeline-report-b32 tag '!!!' is not base32"),
        ({REPORT_TAG_BASE32: ["\u00e9"]}, "is not base32"),
        ({REPORT_TAG_BASE32: ["74"]}, "is not base32"),  # decodes to a non-ASCII byte
        ({REPORT_TAG_BASE32: ["EA"]}, "tag is not a report key"),  # a space
    ],
)
def test_malformed_report_tags(tags: Any, reason: str) -> None:
    ses_record = record(K.DELIVERED, headers=())
    ses_record["mail"]["tags"] = tags

    with pytest.raises(MalformedEmailEvent, match=reason):
        parse_ses_notification(json.dumps(ses_record))


def test_a_body_that_is_not_text_is_refused() -> None:
    with pytest.raises(MalformedEmailEvent, match="the message body is a number, not text"):
        parse_ses_notification(17)  # type: ignore[arg-type]


# -- never anything but MalformedEmailEvent (hypothesis) -------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

VALID = [
    record(kind, event_publishing=publishing)
    for kind in K
    for publishing in (True, False)
    if publishing or kind in (K.DELIVERED, K.BOUNCED, K.COMPLAINED)
] + [DOCS_BOUNCE_EVENT, DOCS_DELIVERY_NOTIFICATION, DOCS_DELAY_EVENT]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _check(body: str) -> None:
    try:
        event = parse_ses_notification(body)
    except MalformedEmailEvent as error:
        reason = str(error)
        assert reason and reason.isascii() and len(reason) < 400, reason
        return
    assert event.occurred_at.tzinfo is UTC
    assert event.message_id.strip() and "\x00" not in event.message_id
    assert event.recipients and all(r.strip() for r in event.recipients)
    assert event.detail is None or len(event.detail) <= MAX_DETAIL_LENGTH
    assert event.report_key is None or check_report_key(event.report_key)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_any_text_parses_or_is_malformed(body: str) -> None:
    _check(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON, st.booleans())
def test_any_json_parses_or_is_malformed(value: Any, wrapped: bool) -> None:
    _check(envelope(json.dumps(value)) if wrapped else json.dumps(value))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(VALID), st.booleans(), st.booleans())
def test_any_mutation_of_a_valid_record_parses_or_is_malformed(
    data: st.DataObject, valid: dict[str, Any], wrapped: bool, remove: bool
) -> None:
    mutated = copy.deepcopy(valid)
    path = data.draw(st.sampled_from(_paths(mutated)))
    target: Any = mutated
    for step in path[:-1]:
        target = target[step]
    if remove:
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(JSON)
    text = json.dumps(mutated)

    _check(envelope(text) if wrapped else text)

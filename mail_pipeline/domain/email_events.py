"""What Amazon SES reports about a report email, read from the email-events queue.

A report email moves ``generated -> sent -> delivered | bounced | complained``. SES tells us
about the later steps by publishing to an SNS topic that an SQS queue subscribes to; each SQS
message body is one of:

- an SNS envelope, ``{"Type": "Notification", "MessageId": ..., "Message": "<JSON text>"}``,
  whose ``Message`` is the SES record (the default for an SQS subscription), or
- the SES record itself (the subscription has *raw message delivery* on).

The SES record comes in two formats, and :func:`parse_ses_notification` reads both:

- *notifications* (set on the sending identity): ``notificationType`` is ``Delivery``,
  ``Bounce`` or ``Complaint``; ``mail.headers`` is there only when the identity is set to
  include the original headers;
- *event publishing* (set on a configuration set, which is how the pipeline sends):
  ``eventType`` is ``Send``, ``Delivery``, ``Bounce``, ``Complaint``, ``Reject`` or
  ``DeliveryDelay``; ``mail.headers`` and ``mail.tags`` are always there.

Either way ``mail.messageId`` is the id ``SendRawEmail`` answered with, and ``mail.headers``
carries :data:`REPORT_HEADER`, which the senders put on every report email, so an event can be
traced to its report even when it arrives before the sender has recorded the message id.

Events SES may also publish but the pipeline does not track (``Open``, ``Click``,
``Rendering Failure``, ``Subscription``, SES's set-up notice, SNS's subscription
confirmations) raise :class:`UnsupportedEmailEvent`; anything that is not a readable SES
record raises :class:`MalformedEmailEvent`, which the former subclasses. Nothing else is ever
raised: reasons name the field and quote values only in short ASCII form, so they fit a
dead-letter attribute whatever the body held.

Values are checked before they reach the database: ids and addresses are non-empty text
within :data:`MAX_MESSAGE_ID_LENGTH` / :data:`MAX_ADDRESS_LENGTH` with no character
PostgreSQL text refuses (NUL, a lone surrogate); ``detail`` is free text cut to
:data:`MAX_DETAIL_LENGTH`, with such characters replaced.

SES's own documentation ("Contents of event data that Amazon SES publishes to Amazon SNS",
"Amazon SNS notification contents for Amazon SES") is the source of the shapes; SES may add
fields, so unknown fields are ignored. The builders at the end (:func:`ses_notification`,
:func:`sns_envelope`, :func:`ses_notification_body`) produce those shapes, for the sandbox
outbox and for tests.

Delivery is at-least-once: consumers de-duplicate on :attr:`EmailEvent.event_id`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from mail_pipeline.domain.fields import json_type, unstorable_character

#: The header every report email carries: the idempotency key of the report it delivers.
REPORT_HEADER = "X-Mail-Pipeline-Report"
#: The SES message tag that carries the key when SES allows its characters ...
REPORT_TAG = "mail-pipeline-report"
#: ... and the one that carries it base32-encoded (without padding) when it does not.
REPORT_TAG_BASE32 = "mail-pipeline-report-b32"

#: Report keys are 1-128 printable ASCII characters without spaces, so the header carries
#: them unchanged (no RFC 2047 encoding) and a file name can be made from them.
MAX_REPORT_KEY_LENGTH = 128
#: SES message ids are about 60 characters; the outbox's are 43.
MAX_MESSAGE_ID_LENGTH = 256
#: An SNS MessageId is a UUID; the fallback id is ``sha256:`` and 64 hex digits.
MAX_EVENT_ID_LENGTH = 128
#: RFC 5321's limit on an address (local part, ``@``, domain).
MAX_ADDRESS_LENGTH = 320
#: A reason a person reads; longer ones are cut.
MAX_DETAIL_LENGTH = 500

#: Levels of nesting a body may have; SES records have fewer than 6.
MAX_DEPTH = 32

_REPORT_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_REPORT_KEY_LENGTH}}}")
#: What SES allows in a tag value: ASCII letters, digits, ``_`` and ``-``, at most 256.
_TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class EmailEventKind(StrEnum):
    SENT = "sent"  # SES accepted the message and will try to deliver it
    DELIVERED = "delivered"  # the recipient's mail server accepted it
    BOUNCED = "bounced"  # permanently or (after SES's retries) transiently refused
    COMPLAINED = "complained"  # the recipient marked it as spam
    REJECTED = "rejected"  # SES accepted the request but refused to send (a virus)
    DELAYED = "delayed"  # a temporary failure; SES keeps trying until expirationTime


K = EmailEventKind

#: ``eventType`` (event publishing) -> kind, and the record's section for that kind.
_EVENT_TYPES: dict[str, EmailEventKind] = {
    "Send": K.SENT,
    "Delivery": K.DELIVERED,
    "Bounce": K.BOUNCED,
    "Complaint": K.COMPLAINED,
    "Reject": K.REJECTED,
    "DeliveryDelay": K.DELAYED,
}
#: ``notificationType`` (identity notifications) has only three.
_NOTIFICATION_TYPES: dict[str, EmailEventKind] = {
    "Delivery": K.DELIVERED,
    "Bounce": K.BOUNCED,
    "Complaint": K.COMPLAINED,
}
_SECTIONS: dict[EmailEventKind, str] = {
    K.SENT: "send",
    K.DELIVERED: "delivery",
    K.BOUNCED: "bounce",
    K.COMPLAINED: "complaint",
    K.REJECTED: "reject",
    K.DELAYED: "deliveryDelay",
}


class MalformedEmailEvent(ValueError):
    """A queue message that is not a readable SES record; ``str()`` says why.

    It will never parse, so it belongs on the dead-letter queue.
    """


class UnsupportedEmailEvent(MalformedEmailEvent):
    """A well-formed SES or SNS message that is not an email event the pipeline tracks
    (an open, a click, a subscription confirmation). Safe to delete."""


@dataclass(frozen=True)
class EmailEvent:
    """One thing SES reported about one sent email."""

    kind: EmailEventKind
    #: ``mail.messageId``: the id ``SendRawEmail`` answered with.
    message_id: str
    #: The SNS ``MessageId``, or ``sha256:<hex>`` of the body: the same for a redelivery.
    event_id: str
    #: When it happened (the section's ``timestamp``; ``mail.timestamp`` for sent and
    #: rejected), an aware UTC time.
    occurred_at: datetime
    #: The recipients the event is about (a delivery or bounce may name some of them only).
    recipients: tuple[str, ...]
    #: ``Permanent``, ``Transient`` or ``Undetermined`` for a bounce; ``None`` otherwise.
    bounce_type: str | None = None
    #: A short reason a person can read, e.g. ``Permanent/General: smtp; 550 5.1.1 user
    #: unknown``; the SMTP answer for a delivery.
    detail: str | None = None
    #: The report's idempotency key, from :data:`REPORT_HEADER` or the tag, when present.
    report_key: str | None = None


# -- report keys ---------------------------------------------------------------------------


def check_report_key(key: str) -> str:
    """``key`` if it can be a report key (see :data:`MAX_REPORT_KEY_LENGTH`), else ValueError."""
    if not isinstance(key, str) or not _REPORT_KEY.fullmatch(key):
        raise ValueError(
            f"a report key must be 1-{MAX_REPORT_KEY_LENGTH} printable ASCII characters "
            f"without spaces, got {_shown(key)}"
        )
    return key


def report_tag(key: str) -> tuple[str, str]:
    """The SES message tag ``(name, value)`` that carries ``key``.

    SES tag values allow only ASCII letters, digits, ``_`` and ``-`` (at most 256), so a key
    with any other character (``report:17:2026-W10``) travels base32-encoded under
    :data:`REPORT_TAG_BASE32`; a 128-character key encodes to 205.
    """
    check_report_key(key)
    if _TAG_VALUE.fullmatch(key):
        return REPORT_TAG, key
    return REPORT_TAG_BASE32, base64.b32encode(key.encode("ascii")).decode("ascii").rstrip("=")


def _key_from_tag(name: str, value: str) -> str:
    if name == REPORT_TAG:
        return _report_key(value, f"the {name} tag")
    try:
        raw = base64.b32decode(value + "=" * (-len(value) % 8), casefold=False)
        text = raw.decode("ascii")
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, non-ASCII input
        raise MalformedEmailEvent(f"the {name} tag {_shown(value)} is not base32") from exc
    return _report_key(text, f"the {name} tag")


def _report_key(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedEmailEvent(f"{what} is {_shown(value)}, not text")
    try:
        return check_report_key(value.strip())
    except ValueError as exc:
        raise MalformedEmailEvent(f"{what} is not a report key: {_shown(value)}") from exc


# -- parsing -------------------------------------------------------------------------------


def parse_ses_notification(body: str) -> EmailEvent:
    """The email event in one queue message body (SNS envelope or raw SES record).

    Raises :class:`UnsupportedEmailEvent` for messages the pipeline does not track and
    :class:`MalformedEmailEvent` for anything unreadable, never anything else.
    """
    if not isinstance(body, str):
        raise MalformedEmailEvent(f"the message body is {_shown(body)}, not text")
    outer = _object(_load(body, "the message body"), "the message body")
    event_id: str | None = None
    if "Type" in outer:
        record = _sns_message(outer)
        if outer.get("MessageId") is not None:
            event_id = _text(outer["MessageId"], "the SNS MessageId", MAX_EVENT_ID_LENGTH)
    else:
        record = outer
    if event_id is None:
        digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
        event_id = f"sha256:{digest}"
    return _event(record, event_id)


def _sns_message(envelope: dict[str, Any]) -> dict[str, Any]:
    sns_type = envelope.get("Type")
    if sns_type != "Notification":
        hint = (
            " (confirm the subscription at its SubscribeURL)" if "SubscribeURL" in envelope else ""
        )
        raise UnsupportedEmailEvent(
            f"an SNS {_shown(sns_type)} message, not a notification: it carries no email "
            f"event{hint}"
        )
    message = envelope.get("Message")
    if not isinstance(message, str):
        raise MalformedEmailEvent(f"the SNS notification's Message is {_shown(message)}, not text")
    return _object(_load(message, "the SNS Message"), "the SNS Message")


def _event(record: dict[str, Any], event_id: str) -> EmailEvent:
    kind = _kind(record)
    mail = _object(record.get("mail"), "mail")
    message_id = _text(mail.get("messageId"), "mail.messageId", MAX_MESSAGE_ID_LENGTH)
    name = _SECTIONS[kind]
    bounce_type: str | None = None
    if kind in (K.SENT, K.REJECTED):
        # These are about the whole message, when SES took it: no time or recipients of
        # their own (``send`` is ``{}``; ``reject`` has a reason).
        section = _object(record[name] if record.get(name) is not None else {}, name)
        occurred_at = _time(mail.get("timestamp"), "mail.timestamp")
        recipients = _addresses(mail.get("destination"), "mail.destination")
        detail = _optional_detail(section.get("reason"))
    else:
        section = _object(record.get(name), name)
        occurred_at = _time(section.get("timestamp"), f"{name}.timestamp")
        recipients, bounce_type, detail = _SECTION_READERS[kind](section)
    return EmailEvent(
        kind=kind,
        message_id=message_id,
        event_id=event_id,
        occurred_at=occurred_at,
        recipients=recipients,
        bounce_type=bounce_type,
        detail=detail,
        report_key=_report_key_of(mail),
    )


def _kind(record: dict[str, Any]) -> EmailEventKind:
    if "eventType" in record:
        field, kinds = "eventType", _EVENT_TYPES
    elif "notificationType" in record:
        field, kinds = "notificationType", _NOTIFICATION_TYPES
    else:
        raise MalformedEmailEvent(
            "the message is not an SES record: it has neither eventType nor notificationType"
        )
    type_name = record[field]
    if not isinstance(type_name, str):
        raise MalformedEmailEvent(f"{field} is {_shown(type_name)}, not text")
    kind = kinds.get(type_name)
    if kind is None:
        raise UnsupportedEmailEvent(
            f"SES {field} {_shown(type_name)} is not an email event the pipeline tracks "
            f"(it tracks {', '.join(kinds)})"
        )
    return kind


_Facts = tuple[tuple[str, ...], str | None, str | None]


def _delivery(section: dict[str, Any]) -> _Facts:
    recipients = _addresses(section.get("recipients"), "delivery.recipients")
    return recipients, None, _optional_detail(section.get("smtpResponse"))


def _bounce(section: dict[str, Any]) -> _Facts:
    recipients, codes = _recipients(section.get("bouncedRecipients"), "bounce.bouncedRecipients")
    bounce_type = _text(section.get("bounceType"), "bounce.bounceType", 64)
    subtype = section.get("bounceSubType")
    label = f"{bounce_type}/{subtype}" if isinstance(subtype, str) and subtype else bounce_type
    return recipients, bounce_type, _detail(f"{label}: {'; '.join(codes)}" if codes else label)


def _complaint(section: dict[str, Any]) -> _Facts:
    recipients, _ = _recipients(
        section.get("complainedRecipients"), "complaint.complainedRecipients"
    )
    reasons = [
        value
        for value in (section.get("complaintFeedbackType"), section.get("complaintSubType"))
        if isinstance(value, str) and value
    ]
    return recipients, None, _detail(f"complaint: {'/'.join(reasons)}" if reasons else "complaint")


def _delay(section: dict[str, Any]) -> _Facts:
    recipients, codes = _recipients(
        section.get("delayedRecipients"), "deliveryDelay.delayedRecipients"
    )
    delay_type = section.get("delayType")
    label = delay_type if isinstance(delay_type, str) and delay_type else "delayed"
    return recipients, None, _detail(f"{label}: {'; '.join(codes)}" if codes else label)


_SECTION_READERS = {
    K.DELIVERED: _delivery,
    K.BOUNCED: _bounce,
    K.COMPLAINED: _complaint,
    K.DELAYED: _delay,
}


def _report_key_of(mail: dict[str, Any]) -> str | None:
    """The report key from :data:`REPORT_HEADER` in ``mail.headers``, else from the tag."""
    headers = mail.get("headers")
    if headers is not None:
        if not isinstance(headers, list):
            raise MalformedEmailEvent(f"mail.headers is {_shown(headers)}, not a list")
        wanted = REPORT_HEADER.lower()
        for header in headers:
            if not isinstance(header, dict) or not isinstance(header.get("name"), str):
                raise MalformedEmailEvent("mail.headers holds an entry without a name")
            if header["name"].strip().lower() == wanted:
                return _report_key(header.get("value"), f"the {REPORT_HEADER} header")
    tags = mail.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict):
        raise MalformedEmailEvent(f"mail.tags is {_shown(tags)}, not an object")
    for name in (REPORT_TAG, REPORT_TAG_BASE32):
        values = tags.get(name)
        if values is None:
            continue
        if not isinstance(values, list) or not values or not isinstance(values[0], str):
            raise MalformedEmailEvent(f"the {name} tag is {_shown(values)}, not a list of text")
        return _key_from_tag(name, values[0])
    return None


# -- field readers: typed values or MalformedEmailEvent naming the field ---------------------


def _load(text: str, what: str) -> Any:
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise MalformedEmailEvent(f"{what} is nested too deep to decode") from exc
    except ValueError as exc:  # JSONDecodeError, and integers over the digit limit
        raise MalformedEmailEvent(f"{what} is not JSON ({_shown(str(exc), 60)})") from exc
    if _depth(value) > MAX_DEPTH:
        raise MalformedEmailEvent(f"{what} is nested more than {MAX_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """Nesting depth, without recursion (a hostile body may be thousands deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in item)
    return deepest


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEmailEvent(f"{what} is {_shown(value)}, not an object")
    return value


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MalformedEmailEvent(f"{what} is {_shown(value)}, not non-empty text")
    if len(value) > limit:
        raise MalformedEmailEvent(f"{what} is {len(value)} characters; the limit is {limit}")
    bad = unstorable_character(value)
    if bad:
        raise MalformedEmailEvent(f"{what} holds {bad}, which cannot be stored")
    return value


def _time(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise MalformedEmailEvent(f"{what} is {_shown(value)}, not an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedEmailEvent(f"{what} {_shown(value)} is not an ISO 8601 time") from exc
    if moment.utcoffset() is None:
        raise MalformedEmailEvent(f"{what} {_shown(value)} has no time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise MalformedEmailEvent(f"{what} {_shown(value)} is out of range in UTC") from exc


def _addresses(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise MalformedEmailEvent(f"{what} is {_shown(value)}, not a list of addresses")
    return tuple(_text(item, f"an address in {what}", MAX_ADDRESS_LENGTH) for item in value)


def _recipients(value: Any, what: str) -> tuple[tuple[str, ...], list[str]]:
    """The ``emailAddress`` of each ``{"emailAddress": ...}`` entry, and the distinct
    diagnostic codes among them, in order."""
    if not isinstance(value, list) or not value:
        raise MalformedEmailEvent(f"{what} is {_shown(value)}, not a list of recipients")
    addresses: list[str] = []
    codes: list[str] = []
    for entry in value:
        entry = _object(entry, f"an entry of {what}")
        addresses.append(
            _text(entry.get("emailAddress"), f"an emailAddress in {what}", MAX_ADDRESS_LENGTH)
        )
        # SES documents ``diagnosticCode``; ``diagnosticsCode``, a spelling seen in
        # third-party types for delayed recipients, is read too.
        code = entry.get("diagnosticCode", entry.get("diagnosticsCode"))
        if isinstance(code, str) and code.strip() and code.strip() not in codes:
            codes.append(code.strip())
    return tuple(addresses), codes


def _detail(text: str) -> str:
    text = _UNSTORABLE.sub("\ufffd", " ".join(text.split()))
    if len(text) <= MAX_DETAIL_LENGTH:
        return text
    return text[: MAX_DETAIL_LENGTH - 1] + "\u2026"


def _optional_detail(value: Any) -> str | None:
    return _detail(value) if isinstance(value, str) and value.strip() else None


def _shown(value: Any, limit: int = 40) -> str:
    """A value as a reason may quote it: short text escaped to ASCII, else its JSON type."""
    if isinstance(value, str):
        cut = value[:limit] + ("..." if len(value) > limit else "")
        return repr(cut).encode("ascii", "backslashreplace").decode("ascii")
    return json_type(value)


# -- builders: the SES and SNS shapes, for the sandbox outbox and tests ----------------------

#: The sandbox's stand-ins for an AWS account and topic.
SANDBOX_ACCOUNT_ID = "000000000000"
SANDBOX_TOPIC_ARN = f"arn:aws:sns:us-east-1:{SANDBOX_ACCOUNT_ID}:mail-pipeline-email-events"
#: How long after a built DeliveryDelay its ``expirationTime`` is (SES's own varies).
DELAY_EXPIRY = timedelta(hours=12)


def ses_time(moment: datetime) -> str:
    """A time as SES writes it: UTC, milliseconds, ``Z`` (``2017-08-05T00:41:02.669Z``)."""
    if moment.utcoffset() is None:
        raise ValueError("an SES time needs a time zone")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ses_notification(
    kind: EmailEventKind,
    *,
    message_id: str,
    destination: Sequence[str],
    sent_at: datetime,
    occurred_at: datetime | None = None,
    recipients: Sequence[str] | None = None,
    source: str = "reports@example.com",
    headers: Sequence[tuple[str, str]] = (),
    tags: Mapping[str, Sequence[str]] | None = None,
    event_publishing: bool = True,
    bounce_type: str = "Permanent",
    bounce_subtype: str = "General",
    diagnostic_code: str | None = "smtp; 550 5.1.1 user unknown",
    smtp_response: str = "250 2.6.0 Message received",
    complaint_feedback_type: str | None = "abuse",
    reject_reason: str = "Bad content",
    delay_type: str = "TransientCommunicationFailure",
    feedback_id: str | None = None,
) -> dict[str, Any]:
    """An SES record of ``kind`` about the message ``message_id``, as SES publishes it.

    ``event_publishing`` picks the format: ``eventType`` with ``mail.tags`` (a configuration
    set's event destination), or ``notificationType`` (the identity's notifications, which
    have only Delivery, Bounce and Complaint). ``recipients`` are the ones the event is
    about (default: all of ``destination``); ``occurred_at`` defaults to ``sent_at``.
    """
    if not event_publishing and kind not in _NOTIFICATION_TYPES.values():
        raise ValueError(f"SES notifications have no {kind} type; use event_publishing=True")
    occurred = ses_time(occurred_at or sent_at)
    about = list(recipients if recipients is not None else destination)
    feedback = feedback_id or f"{message_id}-feedback"
    mail: dict[str, Any] = {
        "timestamp": ses_time(sent_at),
        "source": source,
        "sourceArn": f"arn:aws:ses:us-east-1:{SANDBOX_ACCOUNT_ID}:identity/"
        + source.rpartition("@")[2],
        "sendingAccountId": SANDBOX_ACCOUNT_ID,
        "messageId": message_id,
        "destination": list(destination),
        "headersTruncated": False,
        "headers": [{"name": name, "value": value} for name, value in headers],
        "commonHeaders": _common_headers(headers, message_id),
    }
    if event_publishing:
        mail["tags"] = {name: list(values) for name, values in (tags or {}).items()}
    else:
        mail["sourceIp"] = "192.0.2.0"
        mail["callerIdentity"] = "mail-pipeline"
        if not headers:  # the identity is not set to include the original headers
            for name in ("headersTruncated", "headers", "commonHeaders"):
                del mail[name]
    type_name = next(name for name, known in _EVENT_TYPES.items() if known is kind)
    record: dict[str, Any] = {("eventType" if event_publishing else "notificationType"): type_name}
    section: dict[str, Any]
    if kind is K.SENT:
        section = {}
    elif kind is K.DELIVERED:
        section = {
            "timestamp": occurred,
            "processingTimeMillis": 546,
            "recipients": about,
            "smtpResponse": smtp_response,
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            "remoteMtaIp": "192.0.2.1",
        }
    elif kind is K.BOUNCED:
        bounced = [{"emailAddress": address, "action": "failed"} for address in about]
        if diagnostic_code:
            for entry in bounced:
                entry["status"] = _smtp_status(diagnostic_code)
                entry["diagnosticCode"] = diagnostic_code
        section = {
            "bounceType": bounce_type,
            "bounceSubType": bounce_subtype,
            "bouncedRecipients": bounced,
            "timestamp": occurred,
            "feedbackId": feedback,
            "reportingMTA": "dns; a8-70.smtp-out.amazonses.com",
        }
    elif kind is K.COMPLAINED:
        section = {
            "complainedRecipients": [{"emailAddress": address} for address in about],
            "timestamp": occurred,
            "feedbackId": feedback,
            "userAgent": "Amazon SES Mailbox Simulator",
            "arrivalDate": occurred,
        }
        if complaint_feedback_type:
            section["complaintFeedbackType"] = complaint_feedback_type
    elif kind is K.REJECTED:
        section = {"reason": reject_reason}
    else:
        section = {
            "timestamp": occurred,
            "delayType": delay_type,
            "expirationTime": ses_time((occurred_at or sent_at) + DELAY_EXPIRY),
            "delayedRecipients": [
                {
                    "emailAddress": address,
                    "status": "4.4.1",
                    "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                }
                for address in about
            ],
        }
    record[_SECTIONS[kind]] = section
    record["mail"] = mail
    return record


def _common_headers(headers: Sequence[tuple[str, str]], message_id: str) -> dict[str, Any]:
    common: dict[str, Any] = {"messageId": message_id}
    for name, value in headers:
        key = name.lower()
        if key in ("from", "to", "cc", "reply-to"):
            common.setdefault({"reply-to": "replyTo"}.get(key, key), []).append(value)
        elif key in ("subject", "date"):
            common[key] = value
    return common


def _smtp_status(diagnostic_code: str) -> str:
    found = re.search(r"\b[245]\.\d{1,3}\.\d{1,3}\b", diagnostic_code)
    return found.group() if found else "5.0.0"


def sns_envelope(
    message: Mapping[str, Any],
    *,
    message_id: str,
    timestamp: datetime,
    topic_arn: str = SANDBOX_TOPIC_ARN,
) -> dict[str, Any]:
    """``message`` as SNS delivers it to an SQS queue without raw message delivery."""
    subscription = f"{topic_arn}:00000000-0000-0000-0000-000000000000"
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": json.dumps(message),
        "Timestamp": ses_time(timestamp),
        "SignatureVersion": "1",
        "Signature": "c2FuZGJveA==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-sandbox.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
        f"&SubscriptionArn={subscription}",
    }


def ses_notification_body(
    record: Mapping[str, Any],
    *,
    sns_message_id: str | None = None,
    sns_timestamp: datetime | None = None,
    topic_arn: str = SANDBOX_TOPIC_ARN,
) -> str:
    """The queue message body for an SES ``record``: wrapped in an SNS envelope when
    ``sns_message_id`` is given (timestamped ``sns_timestamp``, default the record's
    ``mail.timestamp``), else the record itself (raw message delivery)."""
    if sns_message_id is None:
        return json.dumps(record)
    moment = sns_timestamp or datetime.fromisoformat(record["mail"]["timestamp"])
    return json.dumps(
        sns_envelope(record, message_id=sns_message_id, timestamp=moment, topic_arn=topic_arn)
    )

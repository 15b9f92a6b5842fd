"""Property: whatever a validly signed webhook holds, parsing it gives either
:class:`MalformedWebhook` or status updates that the database stores as they are.

Bodies are arbitrary JSON-like values with hostile ones mixed in (NUL, lone surrogates,
over-long ids, numbers where text belongs, timestamps out of range, NaN, nesting), shaped
enough like each printer's webhook to reach every check. Each is signed with the test
secret, so the parser gets past verification. Updates that come out are stored - a
``mailpieces`` row per piece, ``record_events`` for the events - and read back equal, on
SQLite and on PostgreSQL (which refuses what SQLite lets through). The status-queue envelope
parser gets the same treatment with arbitrary message bodies.

150 examples per property by default; ``WEBHOOK_PROPERTY_EXAMPLES=3000`` runs a deeper search.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import engine_for, unit_of_work
from mail_pipeline.db.mailpiece_status import MailpieceStatusGateway, NewEvent
from mail_pipeline.db.models import Mailpiece, MailpieceEvent, Recipient
from mail_pipeline.domain.campaigns import Postage
from mail_pipeline.domain.mailpieces import MailpieceStatus
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.printers import intelliprint, lob, stannp
from mail_pipeline.integrations.printers.base import (
    MalformedWebhook,
    Printer,
    StatusUpdate,
    WebhookEnvelope,
)
from mail_pipeline.integrations.printers.webhooks import envelope_from_json, parse_envelope
from tests.signed_webhooks import (
    intelliprint_envelope,
    lob_envelope,
    message,
    signing_printers,
    stannp_envelope,
)

PROPERTY = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    max_examples=int(os.environ.get("WEBHOOK_PROPERTY_EXAMPLES", "150")),
    deadline=None,
)
#: Pieces one example may need rows for (a Stannp webhook carries several).
PIECE_ROWS = 6

HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "evt_\x00",
    "\ud800",
    "psc_\udfff",
    "e" * 200,
    "e" * 201,
    "p" * 128,
    "p" * 129,
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1999-12-31T23:59:59Z",
    "2024-05-01T12:00:00Z",
    "2024-01-15 10:30:00",
    "NaN",
    "1e20",
]

texts = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(categories=["Cs", "Cc", "L", "N", "P", "So"]), max_size=12),
    st.sampled_from(HOSTILE_TEXT),
    st.text(alphabet="ab", min_size=120, max_size=260),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e20, -1e20, 0, 1_714_564_800, 253_402_300_800, 10**20]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """Nine draws in ten from ``good``: enough webhooks get through to be stored."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda n: good if n else bad)


#: Characters PostgreSQL stores (control characters, emoji and non-characters included).
storable = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
storable_text = st.text(storable, max_size=30)
good_ids = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=40),
    storable_text.filter(bool),
    st.integers(min_value=0, max_value=10**30),
    st.text(alphabet="ab", min_size=120, max_size=128),
)
ids = mostly(good_ids, st.one_of(texts, values))
window = {"min_value": datetime(2000, 1, 2), "max_value": datetime(2030, 1, 1)}
offsets = st.sampled_from(
    [
        None,
        UTC,
        timezone(timedelta(hours=14)),
        timezone(timedelta(hours=-14)),
        timezone(-timedelta(hours=5, minutes=30)),
    ]
)
good_times = st.one_of(
    st.datetimes(**window).map(lambda moment: moment.isoformat() + "Z"),
    st.datetimes(**window).map(lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S")),
    st.datetimes(**window, timezones=offsets).map(datetime.isoformat),
    st.integers(min_value=946_771_200, max_value=1_893_456_000),
    st.floats(min_value=946_771_200, max_value=1_893_456_000),
)
timestamps = mostly(
    good_times,
    st.one_of(
        st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
        ).map(datetime.isoformat),
        st.floats(min_value=-1e13, max_value=1e13),
        values,
    ),
)
details = mostly(
    st.one_of(
        st.none(), storable_text, st.integers(), st.text(storable, min_size=490, max_size=700)
    ),
    values,
)

tracking_event = st.fixed_dictionaries({}, optional={"name": details, "location": details})
lob_events = st.fixed_dictionaries(
    {
        "event_type": mostly(
            st.fixed_dictionaries(
                {"id": mostly(st.sampled_from(sorted(lob.EVENT_STATUSES)), texts)}
            ),
            values,
        ),
        "id": ids,
        "reference_id": ids,
        "date_created": timestamps,
        "body": mostly(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": ids,
                    "tracking_events": mostly(
                        st.lists(mostly(tracking_event, values), max_size=3), values
                    ),
                },
            ),
            values,
        ),
    }
)
stannp_pieces = st.fixed_dictionaries(
    {"id": ids, "status": mostly(st.sampled_from(sorted(stannp.STATUSES)), values)},
    optional={"updated": timestamps, "tracking_ref": details, "tracking_reference": details},
)
stannp_webhooks = st.fixed_dictionaries(
    {
        "event": mostly(st.just("mailpiece_status"), values),
        "created": timestamps,
        "mailpieces": mostly(
            st.lists(mostly(stannp_pieces, values), min_size=1, max_size=4), values
        ),
    }
)
letter_events = st.fixed_dictionaries(
    {
        "type": mostly(st.just("letter.updated"), values),
        "status": mostly(st.sampled_from(sorted(intelliprint.STATUSES)), values),
        "print_id": ids,
        "id": ids,
    },
    optional={"returned": mostly(st.fixed_dictionaries({"reason": details}), values)},
)
letter_bodies = st.one_of(
    letter_events, letter_events.map(lambda data: {"data": data, "type": data["type"]})
)
svix_ids = mostly(
    st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=200),
    st.text(alphabet=string.printable, min_size=1, max_size=260),
)


@pytest.fixture
def piece_owners(
    make_campaign: Any, add_recipients: Any, db_url: str
) -> list[tuple[int, int, int]]:
    """``(recipient, organization, campaign)`` ids mailpiece rows can belong to."""
    _, campaign_id = make_campaign()
    recipient_ids = add_recipients(campaign_id, PIECE_ROWS, RecipientStatus.SENT)
    with unit_of_work(db_url) as session:
        return [
            (r.id, r.organization_id, r.campaign_id)
            for r in session.scalars(sa.select(Recipient).where(Recipient.id.in_(recipient_ids)))
        ]


@pytest.fixture(scope="module")
def printers() -> dict[str, Printer]:
    return signing_printers()


@contextmanager
def rolled_back(db_url: str) -> Iterator[Session]:
    """A session whose writes reach the database and are rolled back at the end."""
    with engine_for(db_url).connect() as connection:
        transaction = connection.begin()
        try:
            with Session(bind=connection) as session:
                yield session
        finally:
            transaction.rollback()


def assert_stored_as_they_are(
    db_url: str, owners: list[tuple[int, int, int]], updates: list[StatusUpdate]
) -> None:
    """A piece row per ``(printer, piece id)`` and the events, read back equal."""
    assert all(isinstance(u, StatusUpdate) for u in updates)
    event("stored" if updates else "refused or not a status")
    for u in updates:
        # What PostgreSQL would refuse, checked on SQLite too: the columns' own lengths,
        # NUL, and text without a UTF-8 form.
        for column, value in (
            (Mailpiece.__table__.c.printer, u.printer),
            (Mailpiece.__table__.c.provider_piece_id, u.provider_piece_id),
            (MailpieceEvent.__table__.c.provider_event_id, u.provider_event_id),
            (MailpieceEvent.__table__.c.detail, u.detail),
        ):
            if value is None:
                continue
            length = getattr(column.type, "length", None)
            assert length is None or len(value) <= length
            assert "\x00" not in value
            value.encode("utf-8")
    if not updates:
        return
    keys = sorted({(u.printer, u.provider_piece_id) for u in updates})
    assert len(keys) <= len(owners)
    with rolled_back(db_url) as session:
        pieces: dict[tuple[str, str], Mailpiece] = {}
        for (recipient_id, organization_id, campaign_id), (printer, piece_id) in zip(
            owners, keys, strict=False
        ):
            pieces[(printer, piece_id)] = Mailpiece(
                recipient_id=recipient_id,
                organization_id=organization_id,
                campaign_id=campaign_id,
                printer=printer,
                idempotency_key=f"property-{recipient_id}",
                provider_piece_id=piece_id,
                status=MailpieceStatus.CREATED,
                postage=Postage.FIRST_CLASS,
            )
        session.add_all(pieces.values())
        session.flush()
        first: dict[tuple[str, str], StatusUpdate] = {}
        for u in updates:
            first.setdefault((u.printer, u.provider_event_id), u)
        recorded = MailpieceStatusGateway(session).record_events(
            [
                NewEvent(
                    mailpiece_id=pieces[(u.printer, u.provider_piece_id)].id,
                    printer=u.printer,
                    provider_event_id=u.provider_event_id,
                    status=u.status,
                    occurred_at=u.occurred_at,
                    detail=u.detail,
                )
                for u in first.values()
            ]
        )
        assert recorded == set(first)
        rows = session.execute(
            sa.select(
                MailpieceEvent.printer,
                MailpieceEvent.provider_event_id,
                Mailpiece.provider_piece_id,
                MailpieceEvent.status,
                MailpieceEvent.occurred_at,
                MailpieceEvent.detail,
            ).join(Mailpiece, Mailpiece.id == MailpieceEvent.mailpiece_id)
        ).all()
        assert {(r[0], r[1]): tuple(r[2:]) for r in rows} == {
            key: (u.provider_piece_id, u.status, u.occurred_at, u.detail)
            for key, u in first.items()
        }


def parsed_or_refused(printer: Printer, envelope: WebhookEnvelope) -> list[StatusUpdate]:
    try:
        return printer.parse_webhook(envelope)
    except MalformedWebhook as refused:
        assert str(refused)
        return []


@PROPERTY
@given(event=lob_events)
def test_lob_webhooks_parse_to_storable_updates_or_are_refused(
    event: dict[str, Any], printers: dict[str, Printer], db_url: str, piece_owners: Any
) -> None:
    updates = parsed_or_refused(printers["lob"], lob_envelope(json.dumps(event)))
    assert_stored_as_they_are(db_url, piece_owners, updates)


@PROPERTY
@given(webhook=stannp_webhooks)
def test_stannp_webhooks_parse_to_storable_updates_or_are_refused(
    webhook: dict[str, Any], printers: dict[str, Printer], db_url: str, piece_owners: Any
) -> None:
    updates = parsed_or_refused(printers["stannp"], stannp_envelope(json.dumps(webhook)))
    assert_stored_as_they_are(db_url, piece_owners, updates)


@PROPERTY
@given(event=letter_bodies, message_id=svix_ids)
def test_intelliprint_webhooks_parse_to_storable_updates_or_are_refused(
    event: dict[str, Any],
    message_id: str,
    printers: dict[str, Printer],
    db_url: str,
    piece_owners: Any,
) -> None:
    envelope = intelliprint_envelope(json.dumps(event), message_id)
    updates = parsed_or_refused(printers["intelliprint"], envelope)
    assert_stored_as_they_are(db_url, piece_owners, updates)


signed_messages = st.one_of(
    lob_events.map(lambda e: message(lob_envelope(json.dumps(e)))),
    stannp_webhooks.map(lambda w: message(stannp_envelope(json.dumps(w)))),
    letter_bodies.map(lambda e: message(intelliprint_envelope(json.dumps(e)))),
)


@st.composite
def tampered(draw: st.DrawFn) -> str:
    """A signed message with one envelope field replaced by anything."""
    envelope = json.loads(draw(signed_messages))
    field = draw(st.sampled_from(["printer", "headers", "body", "received_at"]))
    envelope[field] = draw(values)
    return json.dumps(envelope)


status_messages = st.one_of(
    signed_messages,
    tampered(),
    texts,
    values.map(json.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "printer": mostly(st.sampled_from(["lob", "stannp", "intelliprint"]), values),
            "headers": mostly(st.dictionaries(texts, texts, max_size=3), values),
            "body": mostly(texts, values),
            "received_at": mostly(texts, values),
        },
    ).map(json.dumps),
    st.integers(min_value=900, max_value=3_000).map(lambda depth: "[" * depth + "]" * depth),
)


@PROPERTY
@given(raw=status_messages)
def test_status_messages_parse_to_storable_updates_or_are_refused(
    raw: str, printers: dict[str, Printer], db_url: str, piece_owners: Any
) -> None:
    try:
        envelope = envelope_from_json(raw)
    except MalformedWebhook:
        envelope = None
    if envelope is not None:
        assert isinstance(envelope.printer, str) and envelope.printer
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in envelope.headers.items())
        assert isinstance(envelope.body, str)
        assert envelope.received_at is None or isinstance(envelope.received_at, str)
    try:
        updates = parse_envelope(raw, printers)
    except MalformedWebhook as refused:
        assert envelope is None or str(refused)
        return
    assert envelope is not None
    assert_stored_as_they_are(db_url, piece_owners, updates)

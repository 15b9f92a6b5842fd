"""The rules of status tracking that need no database: what a storable status update is, how
odd values are refused (and with which reason), and when a message goes to the DLQ."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from mail_pipeline.db.errors import describe, is_outage
from mail_pipeline.domain.mailpieces import (
    EARLIEST_EVENT_AT,
    MAX_EVENT_DETAIL_LENGTH,
    MAX_PROVIDER_EVENT_ID_LENGTH,
    MAX_PROVIDER_PIECE_ID_LENGTH,
    MailpieceStatus,
    clip_detail,
    failure_reason,
    occurred_at_problem,
    text_problem,
)
from mail_pipeline.integrations.printers.base import MalformedWebhook, StatusUpdate
from mail_pipeline.integrations.printers.common import (
    MAX_WEBHOOK_DEPTH,
    detail_text,
    id_text,
    parse_timestamp,
    shown,
    webhook_json,
)
from mail_pipeline.integrations.printers.signing import lob_signature, verify_lob
from mail_pipeline.integrations.queues.base import MAX_RECEIVE_COUNT
from mail_pipeline.integrations.queues.conventions import dead_letter_attributes, escape_invalid
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.queues.sqs_setup import ensure_queue_with_dlq
from mail_pipeline.resources.queues import LocalQueues, QueuesResource
from mail_pipeline.services.status_tracking import (
    process_status_queue,
    unknown_piece_dead_letter_reason,
    unparseable_reason,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def update(**fields: Any) -> StatusUpdate:
    values: dict[str, Any] = {
        "printer": "lob",
        "provider_piece_id": "psc_1",
        "provider_event_id": "evt_1",
        "status": MailpieceStatus.IN_TRANSIT,
        "occurred_at": datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        **fields,
    }
    return StatusUpdate(**values)


# -- the dead-letter decision for unknown pieces ---------------------------------------------


@pytest.mark.parametrize(("receive_count", "max_receive_count"), [(1, 5), (4, 5), (1, 2)])
def test_an_unknown_piece_is_kept_before_its_last_delivery(
    receive_count: int, max_receive_count: int
) -> None:
    assert (
        unknown_piece_dead_letter_reason([("lob", "psc_1")], receive_count, max_receive_count)
        is None
    )


@pytest.mark.parametrize("receive_count", [5, 6])
def test_an_unknown_piece_is_dead_lettered_on_its_last_delivery(receive_count: int) -> None:
    reason = unknown_piece_dead_letter_reason([("lob", "psc_1")], receive_count, 5)
    assert reason == f"unknown piece psc_1 after {receive_count} deliveries"


def test_the_unknown_piece_reason_names_at_most_five_pieces() -> None:
    unknown = [("stannp", str(n)) for n in range(1, 8)]
    assert (
        unknown_piece_dead_letter_reason(unknown, 5, 5)
        == "unknown pieces 1, 2, 3, 4, 5 and 2 more after 5 deliveries"
    )
    assert unknown_piece_dead_letter_reason([], 9, 5) is None


def test_one_max_receive_count_everywhere() -> None:
    assert MAX_RECEIVE_COUNT == 5
    assert LocalQueue(":memory:").max_receive_count == MAX_RECEIVE_COUNT
    assert LocalQueues(path=":memory:").max_receive_count == MAX_RECEIVE_COUNT
    assert QueuesResource.model_fields["max_receive_count"].default == MAX_RECEIVE_COUNT
    for function in (ensure_queue_with_dlq, process_status_queue):
        default = inspect.signature(function).parameters["max_receive_count"].default
        assert default == MAX_RECEIVE_COUNT


# -- what a storable update is ---------------------------------------------------------------


def test_a_valid_update_is_built() -> None:
    assert update(detail="Delivered at 94107").detail == "Delivered at 94107"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"provider_event_id": "e" * (MAX_PROVIDER_EVENT_ID_LENGTH + 1)},
            "lob webhook: the event id is 201 characters long; at most 200 are stored",
        ),
        (
            {"provider_piece_id": "p" * (MAX_PROVIDER_PIECE_ID_LENGTH + 1)},
            "the piece id is 129 characters long; at most 128 are stored",
        ),
        ({"printer": "l" * 33}, "the printer name is 33 characters long"),
        ({"provider_piece_id": ""}, "the piece id is empty"),
        ({"provider_piece_id": 42}, "the piece id is int, not text"),
        ({"provider_event_id": "evt\x00"}, "the event id contains U+0000"),
        ({"detail": "a\ud800"}, "the detail contains U+D800"),
        ({"detail": "d" * (MAX_EVENT_DETAIL_LENGTH + 1)}, "the detail is 501 characters long"),
        ({"provider_status": {"a": 1}}, "the status name is dict, not text"),
        ({"status": "posted"}, "the status posted is not a mailpiece status"),
        ({"occurred_at": "2025-01-01"}, "the event time is str, not a time"),
        ({"occurred_at": datetime(2025, 3, 1)}, "has no time zone"),
        (
            {"occurred_at": datetime(2025, 3, 1, tzinfo=timezone(timedelta(hours=2)))},
            "is not in UTC",
        ),
        ({"occurred_at": datetime(1999, 12, 31, tzinfo=UTC)}, "is before 2000-01-01"),
        (
            {"occurred_at": datetime.now(UTC) + timedelta(days=2)},
            "is more than a day in the future",
        ),
    ],
)
def test_an_update_that_would_not_store_as_it_is_is_refused(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MalformedWebhook, match=None) as refused:
        update(**fields)
    assert reason in str(refused.value)
    assert str(refused.value).isascii()


def test_the_event_time_window() -> None:
    assert occurred_at_problem(EARLIEST_EVENT_AT, NOW) is None
    assert occurred_at_problem(NOW + timedelta(hours=23), NOW) is None
    assert occurred_at_problem(NOW + timedelta(hours=25), NOW) == "is more than a day in the future"
    assert occurred_at_problem(EARLIEST_EVENT_AT - timedelta(seconds=1), NOW) is not None


def test_text_bounds_and_characters() -> None:
    assert text_problem("psc_1", max_length=5) is None
    assert text_problem("psc_12", max_length=5) == "is 6 characters long; at most 5 are stored"
    assert text_problem("", max_length=5) == "is empty"
    # Characters PostgreSQL stores are fine, emoji and non-characters included.
    assert text_problem("\U0001f4ee \uffff \x01", max_length=10) is None
    assert text_problem("a\x00b") == "contains U+0000, which the database cannot store"
    assert text_problem("\udfff") == "contains U+DFFF, which the database cannot store"


def test_a_detail_is_cut_to_its_bound_and_keys_are_not() -> None:
    long = "x" * 2_000
    assert len(clip_detail(long)) == MAX_EVENT_DETAIL_LENGTH
    assert clip_detail(long).endswith("\u2026")
    assert clip_detail("short") == "short"
    assert detail_text(long, what="detail") == clip_detail(long)
    assert detail_text(12345, what="detail") == "12345"
    assert detail_text("", what="detail") is None
    with pytest.raises(MalformedWebhook, match="detail is an object, not text"):
        detail_text({"a": 1}, what="detail")
    with pytest.raises(MalformedWebhook, match="detail is a boolean, not text"):
        detail_text(True, what="detail")
    with pytest.raises(MalformedWebhook, match="is 129 characters long"):
        update(provider_piece_id=id_text("p" * 129, what="id"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "id is missing"),
        ("", "id is missing"),
        (True, "id is a boolean, not text"),
        (1.5, "id is a number, not text"),
        ([1], "id is a list, not text"),
        ({"id": 1}, "id is an object, not text"),
    ],
)
def test_ids_are_text_or_integers(value: Any, reason: str) -> None:
    assert id_text(98765, what="id") == "98765"
    assert id_text("psc_1", what="id") == "psc_1"
    with pytest.raises(MalformedWebhook, match=reason):
        id_text(value, what="id")


def test_the_failure_reason() -> None:
    assert failure_reason("lob", "postcard.failed", "Rejected") == (
        "lob reported postcard.failed: Rejected"
    )
    assert failure_reason("stannp", "cancelled", None) == "stannp reported cancelled"


# -- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00.000Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-01-15 10:30:00", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (1_714_564_800, datetime(2024, 5, 1, 12, tzinfo=UTC)),
        (1_714_564_800.5, datetime(2024, 5, 1, 12, 0, 0, 500_000, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(value: Any, expected: datetime) -> None:
    parsed = parse_timestamp(value, what="t")
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1e20, "t 1e+20 is not a representable time"),
        (-1e20, "is not a representable time"),
        (float("nan"), "t nan is not a representable time"),
        (float("inf"), "is not a representable time"),
        (10**400, "is not a representable time"),
        ("0001-01-01T00:00:00+14:00", "is outside the representable range in UTC"),
        ("9999-12-31T23:59:59-14:00", "is outside the representable range in UTC"),
        ("yesterday", "t 'yesterday' is not a timestamp"),
        ("2024-05-01\x00", "is not a timestamp"),
        ({"at": 1}, "t is an object, not a timestamp"),
        ([1], "t is a list, not a timestamp"),
        (True, "t is missing"),
        (None, "t is missing"),
    ],
)
def test_timestamps_that_are_no_time_are_refused(value: Any, reason: str) -> None:
    with pytest.raises(MalformedWebhook) as refused:
        parse_timestamp(value, what="t")
    assert reason in str(refused.value)


def test_a_signature_timestamp_that_is_not_finite_is_refused() -> None:
    """``nan`` compares false with everything, so it would pass any tolerance check."""
    body = '{"id": "evt_1"}'
    for timestamp in ("nan", "inf"):
        headers = {
            "lob-signature": lob_signature("s", timestamp, body),
            "lob-signature-timestamp": timestamp,
        }
        with pytest.raises(MalformedWebhook, match="not a finite number"):
            verify_lob("s", headers, body, now=1_714_564_800.0)


# -- bodies ----------------------------------------------------------------------------------


def test_a_body_nested_too_deep_is_refused_with_a_reason() -> None:
    deep = json.dumps({"a": 1})[:-1] + ', "b": ' + "[" * 5_000 + "]" * 5_000 + "}"
    with pytest.raises(MalformedWebhook, match="nested too deep to decode"):
        webhook_json("lob", deep)
    depth = MAX_WEBHOOK_DEPTH + 1
    decodable = '{"b": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(MalformedWebhook, match="nested more than 32 levels deep"):
        webhook_json("lob", decodable)
    shallow = '{"b": ' + "[" * (MAX_WEBHOOK_DEPTH - 1) + "]" * (MAX_WEBHOOK_DEPTH - 1) + "}"
    assert webhook_json("lob", shallow)


def test_values_are_quoted_short_and_in_ascii() -> None:
    assert shown("a\x00\ud800" + "x" * 100) == "'a\\x00\\ud800" + "x" * 37 + "...'"
    assert shown({"a": 1}) == "an object"
    assert shown(None) == "null"


def test_unparseable_reasons() -> None:
    assert unparseable_reason(MalformedWebhook("lob webhook body is not JSON")) == (
        "lob webhook body is not JSON"
    )
    assert unparseable_reason(KeyError("data")) == (
        "the status message could not be parsed: KeyError: 'data'"
    )


# -- database failures ---------------------------------------------------------------------


def test_an_outage_is_told_from_a_statements_fault() -> None:
    lost = sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    assert is_outage(lost)
    assert is_outage(sa.exc.InterfaceError("SELECT 1", {}, Exception("connection closed")))
    invalidated = sa.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_outage(invalidated)
    assert not is_outage(sa.exc.DataError("INSERT", {}, Exception("value too long")))
    assert not is_outage(sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(ValueError("naive datetimes are not stored"))


def test_a_failure_is_described_without_sql_values_or_detail() -> None:
    error = sa.exc.IntegrityError(
        "INSERT INTO recipients (email) VALUES (%(email)s)",
        {"email": "jane@example.com"},
        Exception(
            'duplicate key value violates unique constraint "uq_x"\n'
            "DETAIL:  Key (email)=(jane@example.com) already exists."
        ),
    )
    assert describe(error) == (
        'IntegrityError: duplicate key value violates unique constraint "uq_x"'
    )
    assert describe(ValueError("bad\x00value")) == "ValueError: bad\\x00value"
    assert len(describe(RuntimeError("x" * 1_000))) == 300


# -- dead-letter reasons travel in queue attributes -------------------------------------------


def test_a_reason_is_escaped_where_sqs_would_refuse_it() -> None:
    assert escape_invalid("a\x00b\ud800c\tok") == "a\\u0000b\\ud800c\tok"
    attrs = dead_letter_attributes(
        {}, reason="bad value \x00 here", source_queue="q", message_id="m"
    )
    assert attrs["reason"] == "bad value \\u0000 here"

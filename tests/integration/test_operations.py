from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from mail_pipeline.cli import main
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.services.operations import error_recipients, retry_errors

S = RecipientStatus
#: A complete, mailable US recipient.
MAILABLE: dict[str, Any] = {
    "first_name": "Ann",
    "last_name": "Lee",
    "address1": "1 Main St",
    "city": "New York",
    "region": "NY",
    "postal_code": "10017",
    "country": "US",
}


def test_errors_are_listed_with_reasons_and_retried_to_their_stage(
    db_url, make_campaign, add_recipients
) -> None:
    _, campaign_id = make_campaign()
    proofing, mailing, fine = add_recipients(campaign_id, 3, status=S.PROOFING, **MAILABLE)
    (sync_rejected,) = add_recipients(
        campaign_id,
        1,
        status=S.ERROR,
        status_reason="no printer mails to FR",
        **MAILABLE,
    )
    with unit_of_work(db_url) as session:
        gateway = RecipientGateway(session)
        gateway.mark_error(proofing, S.PROOFING, "the design is invalid: headline missing")
        gateway.transition(mailing, S.PROOFING, S.PROOFED)
        gateway.transition(mailing, S.PROOFED, S.SENDING_STAGED)
        gateway.transition(mailing, S.SENDING_STAGED, S.SENDING)
        gateway.mark_error(mailing, S.SENDING, "lob refused the postcard: address too long")
    sessions = partial(unit_of_work, db_url)

    listed = {e.id: (e.failed_in, e.reason) for e in error_recipients(sessions)}
    assert listed == {
        proofing: (S.PROOFING, "the design is invalid: headline missing"),
        mailing: (S.SENDING, "lob refused the postcard: address too long"),
        sync_rejected: (None, "no printer mails to FR"),
    }

    retried = retry_errors(sessions, [proofing, mailing, sync_rejected, fine], by="ana@ops")
    assert retried.moved == sorted([proofing, mailing, sync_rejected]), "only Error ones move"
    assert retried.not_moved == {fine: "not in Error (it is Proofing)"}
    with unit_of_work(db_url) as session:
        rows = {r.id: r for r in session.query(Recipient)}
    assert rows[proofing].status == S.PENDING
    assert rows[mailing].status == S.PROOFED
    assert rows[sync_rejected].status == S.PENDING
    assert rows[fine].status == S.PROOFING
    assert rows[mailing].status_reason == (
        "retried by ana@ops (was: lob refused the postcard: address too long)"
    )
    assert rows[mailing].error_from_status is None


def test_retry_moves_only_complete_data_and_says_why_for_the_others(
    db_url: str, make_campaign: Any, add_recipients: Any
) -> None:
    _, campaign_id = make_campaign()  # an organization in the US

    def error(**fields: Any) -> int:
        (rid,) = add_recipients(
            campaign_id, 1, status=S.ERROR, status_reason="rejected at sync", **fields
        )
        return rid

    no_state = error(**{**MAILABLE, "region": None})
    unknown_country = error(**{**MAILABLE, "country": None, "region": None, "postal_code": "X1"})
    unroutable = error(**{**MAILABLE, "country": "FR", "region": None, "postal_code": "75001"})
    too_long = error(
        **{**MAILABLE, "address1": "Apartment 12B, The Old Granary Building, 1450 Roads"}
    )
    nameless = error(**{**MAILABLE, "first_name": None, "last_name": None})
    no_address = error(first_name="Ann")
    home_country = error(
        **{**MAILABLE, "country": None, "region": "new york", "postal_code": "10017 1234"}
    )
    (pending,) = add_recipients(campaign_id, 1, status=S.PENDING, **MAILABLE)
    ids = [no_state, unknown_country, unroutable, too_long, nameless, no_address, home_country]

    retried = retry_errors(partial(unit_of_work, db_url), [*ids, pending, 999_999], by="ana")

    assert retried.lines() == [
        f"recipient {no_state}: not moved - US address is missing the state",
        f"recipient {unknown_country}: not moved - US address is missing the state (no country "
        "given; the organization's home country US was assumed)",
        f"recipient {unroutable}: not moved - no printer mails to FR",
        f"recipient {too_long}: not moved - address lines 1 and 2 are 51 characters together; "
        "Lob takes at most 50",
        f"recipient {nameless}: not moved - address is missing name",
        f"recipient {no_address}: not moved - has no postal address (street, city and postal code)",
        f"recipient {home_country}: sent back to Pending",
        f"recipient {pending}: not moved - not in Error (it is Pending)",
        "recipient 999999: not moved - no such recipient",
    ]
    with unit_of_work(db_url) as session:
        rows = {r.id: r for r in session.query(Recipient)}
    for rid in ids[:-1]:
        assert (rows[rid].status, rows[rid].status_reason) == (S.ERROR, "rejected at sync")
    moved = rows[home_country]
    assert (moved.status, moved.country, moved.region, moved.postal_code) == (
        S.PENDING,
        "US",
        "NY",
        "10017-1234",
    )
    assert moved.address_key == "US|10017|1 main st"


def test_cli_lists_errors_and_files_sync_requests(
    db_url: str,
    make_campaign,
    add_recipients,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAIL_PIPELINE_ENV", "test")
    monkeypatch.setenv("MAIL_PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAIL_PIPELINE_TEST_DATABASE_URL", db_url)
    _, campaign_id = make_campaign()
    (rid,) = add_recipients(
        campaign_id, 1, status=S.ERROR, status_reason="bad postcode", **MAILABLE
    )
    (incomplete,) = add_recipients(
        campaign_id, 1, status=S.ERROR, status_reason="no state", **{**MAILABLE, "region": None}
    )

    assert main(["errors"]) == 0
    assert f"{rid}" in capsys.readouterr().out
    assert main(["request-sync", str(campaign_id), "--by", "ana@ops", "--reason", "fixed"]) == 0
    assert "sync request 1 filed" in capsys.readouterr().out
    assert main(["retry", str(rid), str(incomplete), "--by", "ana@ops"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"recipient {rid}: sent back to Pending",
        f"recipient {incomplete}: not moved - US address is missing the state",
        f"1 recipients sent back: [{rid}]",
    ]
    assert main(["retry", str(incomplete), "--by", "ana@ops"]) == 1
    capsys.readouterr()
    assert main(["status"]) == 0
    assert "Pending" in capsys.readouterr().out

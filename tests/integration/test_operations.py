from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from mail_pipeline.cli import main
from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.services.operations import error_recipients, retry_errors

S = RecipientStatus


def test_errors_are_listed_with_reasons_and_retried_to_their_stage(
    db_url, make_campaign, add_recipients
) -> None:
    _, campaign_id = make_campaign()
    proofing, mailing, fine = add_recipients(campaign_id, 3, status=S.PROOFING)
    (sync_rejected,) = add_recipients(
        campaign_id, 1, status=S.ERROR, status_reason="profile p: unknown country 'Atlantis'"
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
        sync_rejected: (None, "profile p: unknown country 'Atlantis'"),
    }

    moved = retry_errors(sessions, [proofing, mailing, sync_rejected, fine], by="ana@ops")
    assert moved == sorted([proofing, mailing, sync_rejected]), "only Error recipients move"
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
    (rid,) = add_recipients(campaign_id, 1, status=S.ERROR, status_reason="bad postcode")

    assert main(["errors"]) == 0
    assert f"{rid}" in capsys.readouterr().out
    assert main(["request-sync", str(campaign_id), "--by", "ana@ops", "--reason", "fixed"]) == 0
    assert "sync request 1 filed" in capsys.readouterr().out
    assert main(["retry", str(rid), "--by", "ana@ops"]) == 0
    assert f"1 recipients sent back: [{rid}]" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "Pending" in capsys.readouterr().out

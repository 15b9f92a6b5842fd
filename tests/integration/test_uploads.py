"""Uploaded CSV lists from file to batch (``services.uploads``) on a real database (SQLite,
or PostgreSQL when MAIL_PIPELINE_TEST_DATABASE_URL is set), with the local folder and an S3
prefix on moto: committed, held for approval, rejected as a whole, never twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import BlocklistEntry, Campaign, Organization, Recipient, UploadBatch
from mail_pipeline.domain.campaigns import CampaignMode, CampaignStatus
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.uploads import LocalUploadFolder, S3UploadPrefix
from mail_pipeline.services.uploads import decide_upload, ingest_upload, target_of

NOW = datetime(2026, 11, 30, 15, tzinfo=UTC)
GOOD = (
    "\ufeffE-Mail;First Name;Surname;Street Address;Town;State;Zip Code;Tier\r\n"
    "ann@example.com;Ann;Lee;12 Main Street;New York;NY;10017;gold\r\n"
    'bo@example.com;Bo;"Ng; Jr";"400 Alder St, Apt 2";Portland;OR;97204;\r\n'
    "ANN@example.com;Ann;Lee;12 Main St;New York;NY;10017;\r\n"
).encode()
BAD_ZIP = (
    b"email,first_name,last_name,address,city,state,zip\n"
    b"cy@example.com,Cy,Park,5 Elm St,Boston,MA,ABCDE\n"
    b"di@example.com,Di,Fox,9 Oak Ave,Austin,TX,73301\n"
)


def _brand(
    db_url: str, *, trusted: bool, mode: CampaignMode = CampaignMode.ONE_OFF
) -> tuple[str, int]:
    with unit_of_work(db_url) as session:
        org = Organization(
            name="Juniper Trail", slug="juniper-trail", country="US", auto_commit_uploads=trusted
        )
        session.add(org)
        session.flush()
        campaign = Campaign(
            organization_id=org.id,
            name="VIP list",
            campaign_mode=mode,
            status=CampaignStatus.PENDING,
        )
        session.add(campaign)
        session.flush()
        return org.slug, campaign.id


def _drop(root: Path, name: str, data: bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _recipients(db_url: str) -> list[Recipient]:
    with unit_of_work(db_url) as session:
        return list(session.scalars(sa.select(Recipient).order_by(Recipient.id)))


def _settled_store(root: Path) -> LocalUploadFolder:
    return LocalUploadFolder(root, clock=lambda: time.time() + 60)


def test_a_trusted_organizations_list_is_committed_once(db_url: str, tmp_path: Path) -> None:
    slug, campaign = _brand(db_url, trusted=True)
    store = _settled_store(tmp_path)
    _drop(tmp_path, f"{slug}/{campaign}/vip.csv", GOOD)
    sessions = partial(unit_of_work, db_url)

    first = ingest_upload(sessions, store, f"{slug}/{campaign}/vip.csv", NOW)
    again = ingest_upload(sessions, store, f"{slug}/{campaign}/vip.csv", NOW)

    assert (first.status, first.new, first.written) == ("committed", True, 2)
    assert (first.rows_accepted, first.rows_skipped, first.rows_rejected) == (2, 1, 0)
    assert (again.batch_id, again.new, again.written) == (first.batch_id, False, 0)
    rows = _recipients(db_url)
    assert [(r.email_key, r.status, r.source, r.campaign_id) for r in rows] == [
        ("ann@example.com", RecipientStatus.PENDING, "upload", campaign),
        ("bo@example.com", RecipientStatus.PENDING, "upload", campaign),
    ]
    assert rows[0].properties == {"Tier": "gold"}
    assert rows[1].address1 == "400 Alder St, Apt 2" and rows[1].last_name == "Ng; Jr"
    assert all(r.external_profile_id and r.external_profile_id.startswith("upload:") for r in rows)
    with unit_of_work(db_url) as session:
        batch = session.get_one(UploadBatch, first.batch_id)
        assert batch.decided_by == "auto-commit (trusted organization)"
        assert "duplicate" in (batch.report_csv or "")


def test_a_list_waits_for_approval_and_is_judged_again_when_approved(
    db_url: str, tmp_path: Path
) -> None:
    slug, campaign = _brand(db_url, trusted=False)
    store = _settled_store(tmp_path)
    name = f"{slug}/{campaign}/vip.csv"
    _drop(tmp_path, name, GOOD)
    sessions = partial(unit_of_work, db_url)

    held = ingest_upload(sessions, store, name, NOW)
    assert (held.status, held.written) == ("awaiting_approval", 0)
    assert _recipients(db_url) == []

    approved = decide_upload(
        sessions,
        store,
        held.batch_id or 0,
        approve=True,
        decided_by="ana@ops",
        reason="list checked",
        now=NOW,
    )
    assert (approved.status, approved.written) == ("committed", 2)
    assert len(_recipients(db_url)) == 2
    with unit_of_work(db_url) as session:
        batch = session.get_one(UploadBatch, held.batch_id)
        assert (batch.decided_by, batch.decision_reason) == ("ana@ops", "list checked")
    with pytest.raises(ValueError, match=r"is committed \(by ana@ops\), not awaiting approval"):
        decide_upload(
            sessions,
            store,
            held.batch_id or 0,
            approve=False,
            decided_by="bo",
            reason="x",
            now=NOW,
        )


def test_a_list_changed_after_it_was_checked_is_not_approved(db_url: str, tmp_path: Path) -> None:
    slug, campaign = _brand(db_url, trusted=False)
    store = _settled_store(tmp_path)
    name = f"{slug}/{campaign}/vip.csv"
    _drop(tmp_path, name, GOOD)
    sessions = partial(unit_of_work, db_url)
    held = ingest_upload(sessions, store, name, NOW)
    _drop(tmp_path, name, GOOD + b"zed@example.com;Zed;Ko;1 Pine St;Reno;NV;89501;\r\n")

    outcome = decide_upload(
        sessions, store, held.batch_id or 0, approve=True, decided_by="ana", reason="ok", now=NOW
    )

    assert outcome.status == "rejected"
    assert outcome.reason == (
        "the file changed after it was checked; upload it again to have it checked"
    )
    assert _recipients(db_url) == []


def test_a_list_with_a_bad_row_is_rejected_as_a_whole_with_the_rows_reason(
    db_url: str, tmp_path: Path
) -> None:
    slug, campaign = _brand(db_url, trusted=True)
    store = _settled_store(tmp_path)
    _drop(tmp_path, f"{slug}/{campaign}/bad.csv", BAD_ZIP)

    outcome = ingest_upload(partial(unit_of_work, db_url), store, f"{slug}/{campaign}/bad.csv", NOW)

    assert outcome.status == "rejected" and outcome.written == 0
    assert (outcome.rows_accepted, outcome.rows_rejected) == (1, 1)
    assert _recipients(db_url) == []
    with unit_of_work(db_url) as session:
        report = session.get_one(UploadBatch, outcome.batch_id).report_csv or ""
    (bad_line,) = [line for line in report.splitlines() if line.startswith("2,")]
    assert bad_line.startswith("2,rejected,US address has an invalid ZIP code")


def test_a_rejected_decision_writes_nothing(db_url: str, tmp_path: Path) -> None:
    slug, campaign = _brand(db_url, trusted=False)
    store = _settled_store(tmp_path)
    name = f"{slug}/{campaign}/vip.csv"
    _drop(tmp_path, name, GOOD)
    sessions = partial(unit_of_work, db_url)
    held = ingest_upload(sessions, store, name, NOW)

    outcome = decide_upload(
        sessions,
        store,
        held.batch_id or 0,
        approve=False,
        decided_by="ana",
        reason="wrong list",
        now=NOW,
    )

    assert outcome.status == "rejected" and _recipients(db_url) == []


def test_a_do_not_mail_list_adds_blocklist_entries(db_url: str, tmp_path: Path) -> None:
    slug, _campaign = _brand(db_url, trusted=True)
    store = _settled_store(tmp_path)
    data = (
        "Email Address\tAddress Line 1\tPostcode\tCountry\n"
        "Gone@Example.com\t\t\t\n"
        "\t12 North Main Street\t10017-1234\tUS\n"
        "gone@example.com\t\t\t\n"
    ).encode("utf-16")
    _drop(tmp_path, f"{slug}/do-not-mail/optouts.tsv", data)

    outcome = ingest_upload(
        partial(unit_of_work, db_url), store, f"{slug}/do-not-mail/optouts.tsv", NOW
    )

    assert (outcome.status, outcome.written, outcome.rows_skipped) == ("committed", 2, 1)
    with unit_of_work(db_url) as session:
        entries = {(e.kind, e.value) for e in session.scalars(sa.select(BlocklistEntry))}
    assert entries == {("email", "gone@example.com"), ("address", "US|10017|12 n main st")}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("vip.csv", "is not at <organization slug>/<campaign id>/<file>"),
        ("juniper-trail/vip/x.csv", "'vip' is neither a campaign id nor 'do-not-mail'"),
    ],
)
def test_a_file_in_no_recognised_place_is_named(name: str, problem: str) -> None:
    target = target_of(name)
    assert isinstance(target, str) and problem in target


def test_a_list_for_an_automated_campaign_is_refused(db_url: str, tmp_path: Path) -> None:
    slug, campaign = _brand(db_url, trusted=True, mode=CampaignMode.AUTOMATED)
    store = _settled_store(tmp_path)
    _drop(tmp_path, f"{slug}/{campaign}/vip.csv", GOOD)
    with pytest.raises(ValueError, match="is automated: lists are uploaded to one-off"):
        ingest_upload(partial(unit_of_work, db_url), store, f"{slug}/{campaign}/vip.csv", NOW)


def test_the_s3_prefix_lists_and_reads_uploads() -> None:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="brand-uploads")
        client.put_object(Bucket="brand-uploads", Key="uploads/juniper-trail/7/vip.csv", Body=GOOD)
        client.put_object(Bucket="brand-uploads", Key="uploads/juniper-trail/7/_SUCCESS", Body=b"")
        client.put_object(Bucket="brand-uploads", Key="elsewhere/x.csv", Body=b"a")
        store = S3UploadPrefix(client, "brand-uploads", "uploads")

        files = list(store.files())

        assert [f.name for f in files] == ["juniper-trail/7/vip.csv"]
        assert store.read("juniper-trail/7/vip.csv") == GOOD
        assert store.describe("juniper-trail/7/vip.csv") == (
            "s3://brand-uploads/uploads/juniper-trail/7/vip.csv"
        )
        client.put_object(Bucket="brand-uploads", Key="uploads/juniper-trail/7/vip.csv", Body=b"x")
        assert next(store.files()).version != files[0].version


def test_the_s3_uploads_resource_reads_through_dagster_aws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster_aws.s3 import S3Resource

    from mail_pipeline.resources.uploads import S3Uploads

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="brand-uploads")
        boto3.client("s3", region_name="us-east-1").put_object(
            Bucket="brand-uploads", Key="lists/bramble/do-not-mail/optouts.csv", Body=b"email\n"
        )
        uploads = S3Uploads(
            s3=S3Resource(region_name="us-east-1"), bucket="brand-uploads", prefix="lists"
        )

        store = uploads.store()

        assert [f.name for f in store.files()] == ["bramble/do-not-mail/optouts.csv"]
        assert store.read("bramble/do-not-mail/optouts.csv") == b"email\n"

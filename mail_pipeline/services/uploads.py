"""Uploaded CSV lists, from file to committed or rejected batch (seed 002's ingestion
pipeline: file -> parse -> validate -> commit or reject; rules: ``domain.uploads``).

Where a file is says what it is (below the upload store's root):

- ``<organization slug>/<campaign id>/<any name>.csv``: recipients for that one-off campaign;
- ``<organization slug>/do-not-mail/<any name>.csv``: do-not-mail entries for the
  organization (emails and addresses: ``domain.uploads.do_not_mail``).

Each file content at each place becomes one batch (``upload_batches``, unique on place and
SHA-256), however often it is seen: re-uploading the same bytes changes nothing, a changed
file is a new batch. A batch is judged as a whole: rejected (nothing written, the reason and
the per-row report kept for the uploader), committed at once when the organization is
trusted (``auto_commit_uploads``), or left awaiting approval. Approving reads the file again:
it must be byte for byte the one that was judged, and it is judged again against the
campaign as it is then (people added meanwhile are skipped), then committed in one
transaction with the batch's new status. Rejecting writes nothing but the decision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy.orm import Session

from mail_pipeline.db.campaigns import CampaignGateway
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.models import UploadBatch
from mail_pipeline.db.uploads import AWAITING, COMMITTED, REJECTED, UploadGateway, UploadOwner
from mail_pipeline.domain.profiles import Destination
from mail_pipeline.domain.uploads import (
    RowStatus,
    UploadCampaign,
    UploadVerdict,
    read_upload,
    report_csv,
    report_markdown,
)
from mail_pipeline.domain.uploads.do_not_mail import (
    DoNotMailVerdict,
    do_not_mail_report,
    read_do_not_mail,
)
from mail_pipeline.integrations.uploads import UploadStore

RECIPIENTS = "recipients"
DO_NOT_MAIL = "do_not_mail"
DO_NOT_MAIL_FOLDER = "do-not-mail"


@dataclass(frozen=True)
class UploadTarget:
    organization_slug: str
    kind: str
    campaign_id: int | None = None


def target_of(name: str) -> UploadTarget | str:
    """What the file at ``name`` (below the store's root) is, or why it is nothing."""
    parts = PurePosixPath(name).parts
    if len(parts) != 3:
        return (
            f"{name!r} is not at <organization slug>/<campaign id>/<file> or "
            f"<organization slug>/{DO_NOT_MAIL_FOLDER}/<file>"
        )
    slug, where, _file = parts
    if where == DO_NOT_MAIL_FOLDER:
        return UploadTarget(slug, DO_NOT_MAIL)
    if not where.isdigit():
        return f"{name!r}: {where!r} is neither a campaign id nor {DO_NOT_MAIL_FOLDER!r}"
    return UploadTarget(slug, RECIPIENTS, int(where))


@dataclass(frozen=True)
class UploadOutcome:
    batch_id: int | None
    status: str
    #: A new batch, or one this call decided; False when the file was seen before.
    new: bool
    summary: str
    rows_accepted: int = 0
    rows_skipped: int = 0
    rows_rejected: int = 0
    written: int = 0
    reason: str | None = None

    @classmethod
    def of(cls, batch: UploadBatch, *, new: bool, written: int = 0) -> UploadOutcome:
        return cls(
            batch.id,
            batch.status,
            new,
            batch.summary or "",
            batch.rows_accepted,
            batch.rows_skipped,
            batch.rows_rejected,
            written,
            batch.rejection_reason,
        )


def ingest_upload(
    sessions: SessionFactory, store: UploadStore, name: str, now: datetime
) -> UploadOutcome:
    """Judge the file ``name`` and commit, reject or hold it (see the module)."""
    data = store.read(name)
    sha = hashlib.sha256(data).hexdigest()
    source = name
    target = target_of(name)
    with sessions() as session:
        gateway = UploadGateway(session)
        known = gateway.batch_for(source, sha)
        if known is not None:
            return UploadOutcome.of(known, new=False)
        if isinstance(target, str):
            raise ValueError(target)
        owner = gateway.owner(target.organization_slug, target.campaign_id)
        if isinstance(owner, str):
            raise ValueError(owner)
        verdict = _judge(session, owner, target.kind, data)
        status = (
            REJECTED if verdict.problem is not None else (COMMITTED if owner.trusted else AWAITING)
        )
        batch = gateway.add_batch(
            organization_id=owner.organization_id,
            campaign_id=owner.campaign_id,
            kind=target.kind,
            source=source,
            sha256=sha,
            status=status,
            created_at=now,
            decided_at=now if status != AWAITING else None,
            decided_by="auto-commit (trusted organization)" if status == COMMITTED else None,
            **_counts(verdict),
        )
        written = _commit(gateway, owner, verdict, batch.id, now) if status == COMMITTED else 0
        return UploadOutcome.of(batch, new=True, written=written)


def decide_upload(
    sessions: SessionFactory,
    store: UploadStore,
    batch_id: int,
    *,
    approve: bool,
    decided_by: str,
    reason: str,
    now: datetime,
) -> UploadOutcome:
    """Approve (commit) or reject a batch awaiting approval. Raises ``ValueError`` for a
    batch that does not exist or no longer awaits approval."""
    with sessions() as session:
        gateway = UploadGateway(session)
        batch = gateway.get(batch_id)
        if batch is None:
            raise ValueError(f"there is no upload batch {batch_id}")
        if batch.status != AWAITING:
            raise ValueError(
                f"upload batch {batch_id} is {batch.status} "
                f"(by {batch.decided_by or 'nobody'}), not awaiting approval"
            )
        decision = {"decided_by": decided_by, "decision_reason": reason, "decided_at": now}
        if not approve:
            gateway.decide(batch_id, REJECTED, decision)
            session.refresh(batch)
            return UploadOutcome.of(batch, new=True)
        name = batch.source
        data = store.read(name)
        if hashlib.sha256(data).hexdigest() != batch.sha256:
            gateway.decide(
                batch_id,
                REJECTED,
                {
                    **decision,
                    "rejection_reason": "the file changed after it was checked; upload it "
                    "again to have it checked",
                },
            )
            session.refresh(batch)
            return UploadOutcome.of(batch, new=True)
        owner = gateway.owner(
            _slug_of(name), batch.campaign_id if batch.kind == RECIPIENTS else None
        )
        if isinstance(owner, str):
            gateway.decide(batch_id, REJECTED, {**decision, "rejection_reason": owner})
            session.refresh(batch)
            return UploadOutcome.of(batch, new=True)
        verdict = _judge(session, owner, batch.kind, data)
        if verdict.problem is not None:
            gateway.decide(batch_id, REJECTED, {**decision, "rejection_reason": verdict.problem})
            session.refresh(batch)
            return UploadOutcome.of(batch, new=True)
        gateway.decide(batch_id, COMMITTED, {**decision, **_counts(verdict)})
        written = _commit(gateway, owner, verdict, batch_id, now)
        session.refresh(batch)
        return UploadOutcome.of(batch, new=True, written=written)


def _slug_of(name: str) -> str:
    return PurePosixPath(name).parts[0]


Verdict = UploadVerdict | DoNotMailVerdict


def _judge(session: Session, owner: UploadOwner, kind: str, data: bytes) -> Verdict:
    if kind == DO_NOT_MAIL:
        return read_do_not_mail(data, owner.home_country)
    assert owner.campaign_id is not None
    gateway = UploadGateway(session)
    emails, addresses = gateway.campaign_keys(owner.campaign_id)
    blocked_emails, blocked_addresses = CampaignGateway(session).blocklist(owner.organization_id)
    return read_upload(
        data,
        UploadCampaign(
            owner.campaign_id,
            Destination(
                home_country=owner.home_country, printer_preference=owner.printer_preference
            ),
            email_keys=emails,
            address_keys=addresses,
            blocked_emails=blocked_emails,
            blocked_addresses=blocked_addresses,
        ),
    )


def _counts(verdict: Verdict) -> dict[str, object]:
    if isinstance(verdict, DoNotMailVerdict):
        report, summary = do_not_mail_report(verdict)
        accepted = len({e.line for e in verdict.entries})
    else:
        report, summary = report_csv(verdict), report_markdown(verdict)
        accepted = len(verdict.accepted)
    return {
        "rows_total": accepted + len(verdict.skipped) + len(verdict.rejected),
        "rows_accepted": accepted,
        "rows_skipped": len(verdict.skipped),
        "rows_rejected": len(verdict.rejected),
        "rejection_reason": verdict.problem,
        "report_csv": report,
        "summary": summary,
    }


def _commit(
    gateway: UploadGateway, owner: UploadOwner, verdict: Verdict, batch_id: int, now: datetime
) -> int:
    if isinstance(verdict, DoNotMailVerdict):
        return gateway.add_do_not_mail(
            owner.organization_id,
            [(e.kind, e.key) for e in verdict.entries],
            f"do-not-mail upload (batch {batch_id})",
            now,
        )
    rows = [
        {**row.values, "external_profile_id": row.profile_id}
        for row in verdict.accepted
        if row.status is RowStatus.ACCEPTED
    ]
    return gateway.add_recipients(owner, rows, now)

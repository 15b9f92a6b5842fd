"""An unexpected failure while proofing one recipient fails that recipient, not the batch."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sqlalchemy import select

from mail_pipeline.db.engine import unit_of_work
from mail_pipeline.db.models import Recipient
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.integrations.renderer.backup import BackupRenderer
from mail_pipeline.integrations.renderer.chain import FallbackRenderer
from mail_pipeline.integrations.renderer.models import ProofRequest, RenderedProof
from mail_pipeline.resources.images import SandboxImageHost
from mail_pipeline.services.demo import US_BRAND
from mail_pipeline.services.proofing import proof_batch

S = RecipientStatus


class FlakyDrawing(BackupRenderer):
    """Draws real proofs, except for one recipient where the drawing library blows up."""

    def __init__(self, broken_recipient: int) -> None:
        super().__init__(antialias=False)
        self.broken_recipient = broken_recipient

    def render(self, request: ProofRequest) -> RenderedProof:
        if request.recipient_id == self.broken_recipient:
            raise OSError("broken data stream when writing image file")
        return super().render(request)


def test_one_recipient_blowing_up_does_not_stop_the_batch(
    db_url: str, make_campaign, add_recipients, tmp_path: Path
) -> None:
    _, campaign_id = make_campaign(design=US_BRAND.design)
    ids = add_recipients(
        campaign_id,
        4,
        last_name="Doe",
        address1="1 Oak St",
        city="Austin",
        region="TX",
        postal_code="78701",
        country="US",
    )
    with unit_of_work(db_url) as session:
        batch = RecipientGateway(session).claim_batch(S.PENDING, S.PROOFING_STAGED, 10)
    images = SandboxImageHost(
        sandbox_path=str(tmp_path / "s.sqlite"), image_dir=str(tmp_path / "images")
    ).client()

    result = proof_batch(
        partial(unit_of_work, db_url),
        batch.batch_id,
        FallbackRenderer([FlakyDrawing(ids[1])]),
        images,
        id_key="test-proof-id-key",
    )

    assert result.proofed == 3
    assert list(result.errors) == [ids[1]]
    with unit_of_work(db_url) as session:
        rows = {r.id: r for r in session.scalars(select(Recipient))}
    assert rows[ids[1]].status == S.ERROR
    assert "unexpected failure while proofing: OSError('broken data stream" in (
        rows[ids[1]].status_reason or ""
    )
    assert {rows[i].status for i in ids if i != ids[1]} == {S.PROOFED}

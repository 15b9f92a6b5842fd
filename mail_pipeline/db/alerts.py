"""Recorded run failures (``run_failures``): insert once per run, list the ones nobody was
told about, mark them told."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import dialect_insert
from mail_pipeline.db.models import Organization, RunFailure
from mail_pipeline.domain.alerts import Failure


class RunFailureGateway:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, failures: Sequence[Failure]) -> int:
        """Record ``failures``; a run already recorded is left as it is. Returns how many
        were new."""
        if not failures:
            return 0
        stmt = (
            dialect_insert(self.session)(RunFailure)
            .values(
                [
                    {
                        "run_id": f.run_id,
                        "job": f.job[:200],
                        "stage": (f.stage or None) and f.stage[:64],
                        "organization_id": f.organization_id,
                        "error": f.error,
                        "failed_at": f.failed_at,
                        "created_at": f.failed_at,
                    }
                    for f in failures
                ]
            )
            .on_conflict_do_nothing(index_elements=["run_id"])
            .returning(RunFailure.id)
        )
        return len(self.session.scalars(stmt).all())

    def unnotified(self, limit: int = 200) -> list[Failure]:
        """Failures nobody was told about yet, oldest first, with their organization's name."""
        rows = self.session.execute(
            select(RunFailure, Organization.name)
            .outerjoin(Organization, Organization.id == RunFailure.organization_id)
            .where(RunFailure.notified_at.is_(None))
            .order_by(RunFailure.failed_at, RunFailure.id)
            .limit(limit)
        )
        return [
            Failure(
                run_id=r.run_id,
                job=r.job,
                stage=r.stage,
                organization_id=r.organization_id,
                organization_name=name,
                error=r.error,
                failed_at=r.failed_at,
            )
            for r, name in rows
        ]

    def mark_notified(self, run_ids: Iterable[str], now: datetime) -> int:
        ids = sorted(set(run_ids))
        if not ids:
            return 0
        result = self.session.execute(
            update(RunFailure)
            .where(RunFailure.run_id.in_(ids), RunFailure.notified_at.is_(None))
            .values(notified_at=now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def counts(self, since: datetime) -> list[tuple[int | None, str | None, int]]:
        """Failures since ``since`` per (organization, stage), most first."""
        rows = self.session.execute(
            select(RunFailure.organization_id, RunFailure.stage, func.count())
            .where(RunFailure.failed_at >= since)
            .group_by(RunFailure.organization_id, RunFailure.stage)
            .order_by(func.count().desc())
        )
        return [(org, stage, n) for org, stage, n in rows]

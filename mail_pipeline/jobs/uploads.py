"""Uploaded CSV lists as a sensor and two jobs (use cases: ``services.uploads``; rules:
``domain.uploads``, ``docs/uploads.md``).

- ``uploads_sensor`` (30 s): every new or replaced file in the upload store becomes one
  ``upload_ingest_job`` run (run key: the file's name and version), which judges the whole
  file and commits it (trusted organizations), rejects it, or leaves it awaiting approval;
  the batch's per-row report is in the run's metadata and in ``upload_batches``.
- ``upload_decision_job``: approve or reject a batch awaiting approval, by a person, whose
  name and reason are the run's tags:

    dagster job launch -w workspace.yaml -j upload_decision_job \\
      --config-json '{"ops": {"decide_upload_batch": {"config": {"batch_id": 7}}}}' \\
      --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "list checked"}'
"""

import json
from datetime import UTC, datetime

import dagster as dg

from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import Metadata
from mail_pipeline.jobs.runs import check_launch
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.uploads import UploadsResource
from mail_pipeline.services.uploads import (
    UploadOutcome,
    decide_upload,
    ingest_upload,
    target_of,
)

STAGE = "uploads"


class UploadFileConfig(dg.Config):
    #: The file's path below the upload store's root (``<org slug>/<campaign id>/x.csv``).
    name: str


class DecisionConfig(dg.Config):
    batch_id: int
    #: False rejects the batch (nothing is written).
    approve: bool = True


def _metadata(outcome: UploadOutcome) -> Metadata:
    return {
        "batch_id": outcome.batch_id,
        "status": outcome.status,
        "rows_accepted": outcome.rows_accepted,
        "rows_skipped": outcome.rows_skipped,
        "rows_rejected": outcome.rows_rejected,
        "written": outcome.written,
        "report": dg.MetadataValue.md(outcome.summary or "-"),
    }


@dg.op
def ingest_upload_file(
    context: dg.OpExecutionContext,
    config: UploadFileConfig,
    database: Database,
    uploads: UploadsResource,
) -> dg.Output[None]:
    """Judge one uploaded file as a whole: commit, reject, or hold it for approval."""
    try:
        outcome = ingest_upload(database.session, uploads.store(), config.name, datetime.now(UTC))
    except ValueError as error:
        raise dg.Failure(description=f"{config.name}: {error}") from error
    context.log.info(
        "%s: batch %s %s%s",
        config.name,
        outcome.batch_id,
        outcome.status,
        "" if outcome.new else " (seen before: nothing done)",
    )
    return dg.Output(None, metadata=_metadata(outcome))


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=900, retries=2),
    description="Judge one uploaded CSV list: commit it, reject it or hold it for approval.",
)
def upload_ingest_job() -> None:
    ingest_upload_file()


@dg.op
def decide_upload_batch(
    context: dg.OpExecutionContext,
    config: DecisionConfig,
    database: Database,
    uploads: UploadsResource,
) -> dg.Output[None]:
    """Approve (commit) or reject an upload batch awaiting approval; who and why are the
    run's ``requested_by`` and ``reason`` tags."""
    run_tags = context.run.tags
    check_launch(context, always=True)
    try:
        outcome = decide_upload(
            database.session,
            uploads.store(),
            config.batch_id,
            approve=config.approve,
            decided_by=run_tags[tags.REQUESTED_BY],
            reason=run_tags[tags.REASON],
            now=datetime.now(UTC),
        )
    except ValueError as error:
        raise dg.Failure(description=str(error)) from error
    return dg.Output(None, metadata=_metadata(outcome))


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=900, retries=2),
    description="Approve or reject an upload batch awaiting approval (tags: requested_by, reason).",
)
def upload_decision_job() -> None:
    decide_upload_batch()


@dg.sensor(
    job=upload_ingest_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One upload_ingest_job run per new or replaced CSV list in the upload store.",
)
def uploads_sensor(
    context: dg.SensorEvaluationContext, uploads: UploadsResource
) -> dg.SensorResult:
    """The cursor holds the version of every file seen (files gone drop out of it), so each
    version of each file is launched once; a file in no recognised place is reported once
    per version and never launched."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current: dict[str, str] = {}
    requests: list[dg.RunRequest] = []
    misplaced: list[str] = []
    for file in uploads.store().files():
        current[file.name] = file.version
        if seen.get(file.name) == file.version:
            continue
        target = target_of(file.name)
        if isinstance(target, str):
            misplaced.append(target)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"upload:{file.name}:{file.version}",
                run_config=dg.RunConfig(
                    ops={"ingest_upload_file": UploadFileConfig(name=file.name)}
                ),
                tags={tags.REQUESTED_BY: "uploads_sensor"},
            )
        )
    for problem in misplaced:
        context.log.warning("ignored upload: %s", problem)
    skip = None
    if not requests:
        skip = dg.SkipReason(
            f"no new upload ({len(current)} files seen"
            + (f"; {len(misplaced)} in no recognised place: {misplaced[0]}" if misplaced else "")
            + ")"
        )
    return dg.SensorResult(run_requests=requests, skip_reason=skip, cursor=json.dumps(current))


JOBS = [upload_ingest_job, upload_decision_job]
SENSORS = [uploads_sensor]

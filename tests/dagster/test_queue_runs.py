"""Queue-draining runs when the dead-letter queue refuses a message: the run's other work is
done, the message stays on its queue, and the run fails saying so (not a quiet count)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mail_pipeline.definitions import sandbox_resources
from mail_pipeline.integrations.errors import VendorUnavailable
from mail_pipeline.integrations.queues.base import QueueMessage
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.integrations.queues.local_db import QueueDatabase
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.metadata import unparked_failure
from mail_pipeline.jobs.queues import mail_status_job
from mail_pipeline.services.status_tracking import StatusRunResult
from mail_pipeline.settings import Environment, Settings

ASKED = {tags.REQUESTED_BY: "ana@ops", tags.REASON: "drain the status queue now"}


def _refuse(self: LocalQueue, message: QueueMessage, reason: str) -> None:
    raise VendorUnavailable("local queue", f"{self.name} DLQ: database is locked")


def test_a_status_run_whose_dlq_refuses_a_message_fails_and_keeps_it(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources: dict[str, Any] = sandbox_resources(Settings(Environment.TEST, db_url, tmp_path))
    queue = resources["queues"].status_queue()
    queue.send("this is not a printer webhook")
    monkeypatch.setattr(LocalQueue, "dead_letter", _refuse)

    with dg.instance_for_test() as instance:
        result = mail_status_job.execute_in_process(
            run_config={"ops": {"apply_mail_statuses": {"config": {"max_receives": 1}}}},
            resources=resources,
            instance=instance,
            tags=ASKED,
            raise_on_error=False,
        )

    assert not result.success
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.user_failure_data
    assert error is not None
    assert error.description is not None
    assert error.description.startswith(
        "1 status message could not be moved to the dead-letter queue"
    )
    assert error.metadata["dead_letter_failures"].value == 1
    assert error.metadata["received"].value == 1
    monkeypatch.undo()
    later = LocalQueue(
        QueueDatabase(resources["queues"].path),
        queue.name,
        clock=lambda: time.time() + resources["queues"].visibility_timeout + 1,
    )
    assert later.approximate_depth() == 1, "the message stays on its queue"
    assert later.dlq().approximate_depth() == 0


def test_no_failure_when_every_message_was_parked() -> None:
    assert unparked_failure(StatusRunResult(received=3, dead_lettered=3), {}, "status") is None
    failure = unparked_failure(StatusRunResult(dead_letter_failures=2), {"n": 2}, "status")
    assert failure is not None and failure.description is not None
    assert failure.description.startswith("2 status messages could not be moved")

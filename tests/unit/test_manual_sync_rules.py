from __future__ import annotations

import pytest

from mail_pipeline.domain.manual_sync import OPEN_STATUSES, ManualSyncStatus, outcome


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, ManualSyncStatus.COMPLETED),
        ("", ManualSyncStatus.COMPLETED),
        ("Win-back (3) has no provider_segment_id", ManualSyncStatus.FAILED),
    ],
)
def test_a_request_fails_when_its_sync_reported_a_problem(
    error: str | None, status: ManualSyncStatus
) -> None:
    assert outcome(error) is status


def test_pending_and_running_requests_are_open_and_ended_ones_are_not() -> None:
    assert {ManualSyncStatus.PENDING, ManualSyncStatus.RUNNING} == OPEN_STATUSES


def test_statuses_are_the_strings_the_platform_app_reads() -> None:
    assert [s.value for s in ManualSyncStatus] == ["pending", "running", "completed", "failed"]

"""The lifecycle of a manual "sync this campaign now" request.

A request is filed ``pending``; the sync run it asked for marks it ``running`` when the run
starts, then ``completed`` (with the number of recipients created) or ``failed`` (with the
problem campaigns' details, or the error of a crashed run). Only pending requests are
launched; a pending or running request is still open, so no second one is filed for the same
campaign while it is.

The values are stored as they are in ``manual_sync_triggers.status`` (at most 16 characters),
which the platform's app also reads.
"""

from __future__ import annotations

from enum import StrEnum


class ManualSyncStatus(StrEnum):
    PENDING = "pending"  # filed; the manual-sync sensor asks for its run each tick
    RUNNING = "running"  # its run started (``launched_at``, ``run_id``)
    COMPLETED = "completed"  # the sync ended without problems (``synced_count``)
    FAILED = "failed"  # a campaign could not be synced, or the run crashed (``error``)


#: Requests that have not ended yet.
OPEN_STATUSES = frozenset({ManualSyncStatus.PENDING, ManualSyncStatus.RUNNING})


def outcome(error: str | None) -> ManualSyncStatus:
    """How a request ends: failed when its sync reported any problem, completed otherwise."""
    return ManualSyncStatus.FAILED if error else ManualSyncStatus.COMPLETED

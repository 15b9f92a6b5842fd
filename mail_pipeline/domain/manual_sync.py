"""The lifecycle of a manual "sync this campaign now" request.

A request is filed ``pending``; the sync run it asked for marks it ``running`` when the run
starts, then ``completed`` (with the number of recipients created) or ``failed`` (with the
problem campaigns' details, or the error of a crashed run). Only pending requests are
launched; a pending or running request is still open, so no second one is filed for the same
campaign while it is.

A run that ends without saying how the sync went was lost (its worker killed, out of
memory, its host gone): the request goes back to ``pending`` for another run, its
``attempt`` one higher and the lost run named in its ``error``, up to :data:`MAX_ATTEMPTS`
runs; then it is failed, and a person may ask again. A sync can be run again safely: the
recipients it already created are not created twice.

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


#: Runs a request is given before a lost run fails it instead of launching another.
MAX_ATTEMPTS = 3


def run_key(trigger_id: int, attempt: int) -> str:
    """The run key of a request's ``attempt``-th run (the first keeps the plain key)."""
    return f"manual-sync-{trigger_id}" if attempt <= 1 else f"manual-sync-{trigger_id}-{attempt}"


#: Requests that have not ended yet.
OPEN_STATUSES = frozenset({ManualSyncStatus.PENDING, ManualSyncStatus.RUNNING})


def outcome(error: str | None) -> ManualSyncStatus:
    """How a request ends: failed when its sync reported any problem, completed otherwise."""
    return ManualSyncStatus.FAILED if error else ManualSyncStatus.COMPLETED

"""Named crash points: where a process may be killed on purpose to prove recovery.

Every side effect the pipeline makes has moments where a crash would be costly: after a
printer accepted a postcard but before the database knows, after a commit but before the
queue message is deleted. :func:`failpoint` names such a moment. It does nothing at all
unless the process was started with ``MAIL_PIPELINE_FAILPOINTS`` naming a folder (the
crash-injection benchmark, ``benchmarks/chaos.py``, sets it for the daemon, the code server
and, through them, every run worker):

- an *armed* point is an empty file of the point's name in that folder;
- the first process to reach an armed point renames the file to ``<name>.hit-<pid>``
  (``rename`` is atomic, so exactly one process takes it, whichever of the run workers or
  threads gets there first), writes a line to it, and kills itself with ``SIGKILL``: no
  ``finally``, no ``atexit``, no flushed buffers, the same as a machine losing power or the
  kernel's OOM killer;
- a point that is not armed costs one ``stat`` call.

Production never sets the variable; :func:`failpoint` then returns at once after one
dictionary look-up. :data:`POINTS` lists every point with where it sits, and a test checks
that each one listed is reached in the code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

#: The folder of armed points; unset (production) switches every point off.
FAILPOINTS_VAR = "MAIL_PIPELINE_FAILPOINTS"

#: Every crash point, and the moment it stands for.
POINTS: dict[str, str] = {
    "staging.claimed": "a sensor committed a batch's claim (in the code server)",
    "batch.taken": "a run took its batch's lease (in the run worker)",
    "proofing.rendered": "a postcard was rendered, before its images were uploaded",
    "proofing.uploaded": "a postcard's images were uploaded, before the batch's commit",
    "mailing.attempts_written": "print attempts were committed, before any printer was asked",
    "mailing.printed": "printers accepted postcards, before their answers were committed",
    "mailing.follow_ups_begun": "meter and CDP event keys were committed, before the calls",
    "mailing.follow_ups_called": "Stripe and Klaviyo acted, before their results were committed",
    "status.applying": "status updates were applied inside the transaction, before its commit",
    "status.applied": "status updates were committed, before their queue messages were deleted",
    "sync.locked": "a sync took its campaign's lock, before it read the segment",
    "sync.written": "a sync committed its new recipients, before it released the lock",
}


def _folder() -> Path | None:
    value = os.environ.get(FAILPOINTS_VAR)
    return Path(value) if value else None


def failpoint(name: str) -> None:
    """Kill this process with ``SIGKILL`` here if ``name`` is armed (see the module)."""
    folder = _folder()
    if folder is None:
        return
    armed = folder / name
    hit = folder / f"{name}.hit-{os.getpid()}"
    try:
        os.rename(armed, hit)
    except OSError:  # not armed, or another process took it first
        return
    with contextlib.suppress(OSError):
        hit.write_text(f"{name} {os.getpid()} {time.time():.3f}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def arm(folder: Path, name: str) -> Path:
    """Arm ``name`` in ``folder`` (the harness's side); returns the file."""
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(POINTS)}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.touch()
    return path


def hits(folder: Path, name: str) -> list[tuple[int, float]]:
    """``(pid, epoch seconds)`` of each process that died at ``name``."""
    found = []
    for path in folder.glob(f"{name}.hit-*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            _name, pid, at = path.read_text().split()
            found.append((int(pid), float(at)))
    return sorted(found, key=lambda item: item[1])


def disarm(folder: Path) -> None:
    """Disarm every point in ``folder`` that no process reached."""
    for name in POINTS:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()

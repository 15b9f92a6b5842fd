"""One ``dagster-daemon`` per Dagster instance: run it only while holding the instance's lock.

:func:`run_guarded` is ``mail-pipeline daemon``:

1. it takes the instance's lock without waiting (:mod:`mail_pipeline.db.instance_locks`: a
   PostgreSQL advisory lock on PostgreSQL storage, a lock file in ``DAGSTER_HOME`` on SQLite);
   when another process holds it, it raises :class:`DaemonAlreadyRunning`, which says who;
2. it starts the command (``dagster-daemon run ...``) as its child, in a process group of its
   own, and on Linux with the parent-death signal set to SIGKILL: the child never outlives
   the wrapper, so a lock released by the wrapper's death (even by SIGKILL) never leaves a
   daemon running without it;
3. it forwards SIGTERM and SIGINT to the child and, once the child has ended, exits with the
   child's status (``128 + N`` when the child died of signal N);
4. while the child runs, it checks every ``verify_every`` seconds that the lock is still held;
   a lost lock (the PostgreSQL session cut, the lock file removed) stops the child and exits
   with :data:`EXIT_LOCK_LOST`, since another daemon may take the lock from then on.

A child that ends without having been asked to (no signal forwarded) is a failure even when
its status is 0: the wrapper then exits with 1, so ``Restart=on-failure`` starts it again.
The lock is released when the wrapper returns.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

from mail_pipeline.db.instance_locks import LockLost

#: Exit status when the instance's lock is held by another process.
EXIT_REFUSED = 3
#: Exit status when the lock was lost while the daemon ran (the daemon was stopped).
EXIT_LOCK_LOST = 4
#: Exit status when the command could not be started.
EXIT_CANNOT_START = 127
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


class InstanceLock(Protocol):
    """What :func:`run_guarded` needs of a lock (``db.instance_locks`` has two); ``verify``
    raises :class:`LockLost` when the lock is no longer held."""

    description: str

    def acquire(self) -> str | None: ...

    def verify(self) -> None: ...

    def release(self) -> None: ...


class DaemonAlreadyRunning(RuntimeError):
    def __init__(self, lock: str, holder: str) -> None:
        self.lock = lock
        self.holder = holder
        super().__init__(
            "another dagster-daemon already runs for this Dagster instance: the "
            f"{lock} is held by {holder}. Only one daemon may run per instance; this one "
            "does not start."
        )


def exit_status(returncode: int) -> int:
    """A child's return code as a shell reports it: ``128 + N`` for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _stderr(message: str) -> None:
    print(f"mail-pipeline daemon: {message}", file=sys.stderr, flush=True)


def run_guarded(
    lock: InstanceLock,
    command: Sequence[str],
    *,
    verify_every: float = 15.0,
    stop_grace: float = 60.0,
    report: Callable[[str], None] = _stderr,
) -> int:
    """Run ``command`` while holding ``lock``; return the exit status for the wrapper."""
    holder = lock.acquire()
    if holder is not None:
        raise DaemonAlreadyRunning(lock.description, holder)
    try:
        report(f"holding the {lock.description}; starting {' '.join(command)}")
        return _supervise(lock, command, verify_every, stop_grace, report)
    finally:
        lock.release()


class _Forwarder:
    """Signal handlers that pass SIGTERM/SIGINT on to the child (or keep them for it, when
    one arrives before the child exists)."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.received: list[int] = []

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.child is not None:
            self.child.send_signal(signum)

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        for signum in self.received:
            child.send_signal(signum)


def _supervise(
    lock: InstanceLock,
    command: Sequence[str],
    verify_every: float,
    stop_grace: float,
    report: Callable[[str], None],
) -> int:
    forwarder = _Forwarder()
    previous = {signum: signal.signal(signum, forwarder) for signum in FORWARDED_SIGNALS}
    try:
        try:
            child = subprocess.Popen(list(command), process_group=0, preexec_fn=_dies_with_parent())
        except OSError as exc:
            report(f"cannot start {command[0]}: {exc}")
            return EXIT_CANNOT_START
        forwarder.attach(child)
        while True:
            try:
                returncode = child.wait(timeout=verify_every)
                break
            except subprocess.TimeoutExpired:
                pass
            if forwarder.received:
                continue  # stopping: the child is on its way out
            try:
                lock.verify()
            except LockLost as lost:
                report(f"{lost}; stopping the daemon, since another one may now start")
                _stop(child, stop_grace)
                return EXIT_LOCK_LOST
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    status = exit_status(returncode)
    if forwarder.received:
        report(f"the daemon stopped (exit status {status})")
        return status
    report(f"the daemon ended on its own (exit status {status})")
    return status or 1


def _stop(child: subprocess.Popen[bytes], grace: float) -> None:
    child.terminate()
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the wrapper dies (Linux's
    ``PR_SET_PDEATHSIG``); ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the wrapper died before the signal was set
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal

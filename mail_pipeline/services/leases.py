"""Holding a batch while a run works on it: take the lease, renew it, give it up.

:class:`BatchHold` is what proofing and mailing runs use (see
:mod:`mail_pipeline.domain.claims` for the rules):

- :meth:`BatchHold.start` takes the batch (its lease and the fencing token on its
  recipients) and returns the recipients, or ``None`` when the batch is not this run's;
- while the ``with`` block runs, a background thread renews the lease every
  ``renew_every``; if a renewal finds the lease gone (recovery returned the batch), ``lost``
  is set and the run stops starting new work - its writes are refused by the fencing guard
  anyway;
- :meth:`BatchHold.finish` releases the lease, or hands it back to expire later when some
  recipients had to be left for recovery to resume.

A renewal that fails on a database error is logged and tried again at the next interval:
the lease outlives a few missed renewals.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.db.leases import BatchLeases
from mail_pipeline.db.models import utcnow
from mail_pipeline.db.recipients import RecipientGateway
from mail_pipeline.domain.claims import DEFAULT_LEASES, LeasePolicy
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.failpoints import failpoint

log = logging.getLogger(__name__)


def holder_token(run_id: str | None) -> str:
    """The fencing token of a run: its Dagster run id, or a fresh id for a run outside
    Dagster (tests, tools)."""
    return run_id or f"local-{uuid.uuid4().hex}"


class BatchHold:
    def __init__(
        self,
        sessions: SessionFactory,
        batch_id: str,
        holder: str,
        *,
        policy: LeasePolicy = DEFAULT_LEASES,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.batch_id = batch_id
        self.holder = holder
        self.policy = policy
        self.clock = clock
        #: Set when a renewal found the batch taken away.
        self.lost = threading.Event()
        #: Why :meth:`start` could not take the batch (for the run's log), else None.
        self.refusal: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, staged: RecipientStatus, working: RecipientStatus) -> list[int] | None:
        """Take the batch: the ids of its recipients now held in ``working``, or ``None``."""
        now = self.clock()
        with self.sessions() as session:
            held = RecipientGateway(session).start_batch(
                self.batch_id,
                staged,
                working,
                self.holder,
                expires_at=now + self.policy.running,
                now=now,
            )
        if held is None:
            self.refusal = self._refusal()
            log.warning("batch %s not taken by %s: %s", self.batch_id, self.holder, self.refusal)
            return None
        failpoint("batch.taken")
        return [r.id for r in held]

    def _refusal(self) -> str:
        """Why the batch could not be taken, from its lease as it is now."""
        with self.sessions() as session:
            lease = BatchLeases(session).get(self.batch_id)
        if lease is None:
            return (
                "it is no longer waiting for a run (recovery returned its recipients to their "
                "stage, or it was finished)"
            )
        if lease.holder is not None and lease.holder != self.holder:
            return f"another run holds it ({lease.holder})"
        return "its lease could not be taken"

    def finish(self, *, unfinished: int = 0) -> None:
        """Release the lease, or hand it back to expire ``deferred`` from now when
        ``unfinished`` recipients were left for recovery to resume."""
        with self.sessions() as session:
            leases = BatchLeases(session)
            if unfinished:
                leases.hand_back(
                    self.batch_id, self.holder, expires_at=self.clock() + self.policy.deferred
                )
            else:
                leases.release(self.batch_id, self.holder)

    def renew(self) -> bool:
        """One renewal; False (and ``lost`` set) when the batch is no longer this run's."""
        now = self.clock()
        with self.sessions() as session:
            kept = BatchLeases(session).renew(
                self.batch_id, self.holder, expires_at=now + self.policy.running, now=now
            )
        if not kept:
            self.lost.set()
            log.error(
                "batch %s: the lease of %s is gone; recovery returned the batch, so this run "
                "stops taking new work",
                self.batch_id,
                self.holder,
            )
        return kept

    def __enter__(self) -> BatchHold:
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name=f"lease-{self.batch_id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _renew_until_stopped(self) -> None:
        interval = self.policy.renew_every.total_seconds()
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except Exception:  # a database hiccup: the lease outlives a missed renewal
                log.exception("batch %s: renewing the lease failed; will try again", self.batch_id)

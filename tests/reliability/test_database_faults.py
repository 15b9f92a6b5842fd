"""Database faults: the database restarts, crashes or drops connections in the middle of
real proofing, mailing, recovery and status-tracking work (the real services, the real
sandboxes), and nothing is lost, doubled or half-applied.

The guarantee, for every fault below:

- the run **fails cleanly** (a database exception naming the outage, its lease left to
  expire) **or retries** (a mailing chunk that failed as a whole is taken again recipient
  by recipient from what the ledger holds);
- the **real recovery** (the clock moved past the lease) and a new run **finish the work**:
  every recipient ends Proofed or Sent, with exactly one printer postcard, one Stripe meter
  event and one Klaviyo event each;
- **nothing is half-applied**, at any moment after the fault (:func:`half_applied`): no
  claimed recipient without its batch's lease and no lease without claimed recipients; no
  postcard the printer holds without the ledger row of its key, no meter or Klaviyo event
  without its ledger row, no ledger row marked done without its effect; no Sent recipient
  with an unsettled follow-up; no daily-cap place taken without its print attempt; no
  recipient short of Proofed holding half a proof;
- the **engines recover**: a process that lives on (a sensor, a lease renewal thread)
  keeps working after the database came back, without being restarted.

How the faults are made:

- *connection dropped* (SQLite and PostgreSQL, ``db_url``): :class:`ConnectionFault` drops
  the connection that is about to run a chosen statement - mid-transaction - with
  ``pg_terminate_backend`` on PostgreSQL (only this test's backends, on its own database),
  and by closing the SQLite connection under the transaction on SQLite; or fails that
  statement on a live connection (a lock timeout, a disk I/O error); "away for a while"
  makes every later statement fail too (``database is locked`` on SQLite);
- *PostgreSQL restarted or crashed* (``postgres`` marker): a private server of the test
  session (``tests/reliability/pg_cluster.py``) is restarted with ``pg_ctl restart -m fast``
  or crashed with ``-m immediate`` in the middle of the run, or stopped until the run has
  failed and started again. The machine's shared server is never restarted.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from mail_pipeline.db.engine import engine_for, normalize_url, unit_of_work
from mail_pipeline.db.errors import is_outage
from mail_pipeline.db.leases import BatchLeases
from mail_pipeline.db.mailpieces import printer_key, side_effect_key
from mail_pipeline.db.models import (
    BatchLease,
    Campaign,
    Mailpiece,
    MailpieceEvent,
    Recipient,
    SendCapUsage,
    SideEffect,
)
from mail_pipeline.domain.claims import LEASED_STATES, LeasePolicy
from mail_pipeline.domain.ledger import SideEffectStatus
from mail_pipeline.domain.mailpieces import MailpieceStatus
from mail_pipeline.domain.recipients import RecipientStatus
from mail_pipeline.domain.sending import CAMPAIGN
from mail_pipeline.integrations.images.sandbox import CloudflareImagesSandbox
from mail_pipeline.integrations.klaviyo.sandbox_data import KlaviyoSandboxData
from mail_pipeline.integrations.printers.base import PostcardRequest, Printer
from mail_pipeline.integrations.printers.sandbox import sandbox_transports
from mail_pipeline.integrations.printers.strategy import DEFAULT_ROUTES, PrinterStrategy
from mail_pipeline.integrations.queues.local import LocalQueue
from mail_pipeline.resources.database import Database
from mail_pipeline.resources.sandbox import shared_store
from mail_pipeline.sensors.pipeline import recovery_sensor
from mail_pipeline.services import proofing
from mail_pipeline.services.leases import BatchHold
from mail_pipeline.services.mailing import MailingResult, MailingServices, mail_batch
from mail_pipeline.services.proofing import proof_batch
from mail_pipeline.services.status_tracking import process_status_queue
from tests.integration.test_pipeline_services import PROOF_KEY, Shop
from tests.integration.test_status_poison import FakeClock, record_piece
from tests.reliability.pg_cluster import PrivateCluster
from tests.signed_webhooks import lob_event, lob_message, signing_printers

S = RecipientStatus
LATER = timedelta(minutes=10)
#: Recipients of a mailing batch: three chunks of four, all in flight at once.
MAILED = 12
CONCURRENCY = 4
CHUNK = 4
FAULTY_RUN = "faulty-run"
FOLLOW_UPS = ("billing_meter", "cdp_event", "image_deletion")
UNPROOFED = frozenset({S.PENDING, S.PROOFING_STAGED, S.PROOFING})
#: Generous bound for a run driven in a thread (a loaded 2-core machine).
RUN_TIMEOUT = 180


# -- the fault -----------------------------------------------------------------------------


class ConnectionFault:
    """Fails the ``nth`` statement matching ``pattern`` that the app's engine runs
    (whichever thread runs it), in the middle of its transaction. ``kind``:

    - ``"drop"``: the connection is lost. PostgreSQL: ``pg_terminate_backend`` on that
      connection's server process, from a connection of its own, as an operator or a
      failover would. SQLite: the connection is closed under the transaction (the driver
      then answers "Cannot operate on a closed database", which SQLAlchemy takes for a lost
      connection);
    - ``"error"``: the statement fails and the connection stays usable, as with a lock or
      statement timeout: the driver's own error is raised in its place - SQLite's ``disk
      I/O error``, PostgreSQL's ``LockNotAvailable`` (``canceling statement due to lock
      timeout``).

    ``until_healed``: from that statement on, every statement fails until :meth:`heal`: the
    database is away for a while (on SQLite each finds ``database is locked``, as when
    another process holds the write lock past the busy timeout). ``action`` replaces the
    drop: restarting the private server kills the connection with every other.
    """

    def __init__(
        self,
        url: str,
        pattern: str,
        *,
        nth: int = 1,
        kind: str = "drop",
        until_healed: bool = False,
        action: Callable[[], None] | None = None,
    ) -> None:
        assert kind in ("drop", "error")
        self.kind = kind
        self.engine = engine_for(url)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.pattern = re.compile(pattern)
        self.nth = nth
        self.until_healed = until_healed
        self.action = action
        self.matches = 0
        #: The statements the fault fell on (their first words).
        self.fired: list[str] = []
        self._healed = False
        self._lock = threading.Lock()
        self._admin = (
            sa.create_engine(
                normalize_url(url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
            )
            if self.postgres and action is None
            else None
        )

    def __enter__(self) -> ConnectionFault:
        event.listen(self.engine, "before_cursor_execute", self._before)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.heal()
        event.remove(self.engine, "before_cursor_execute", self._before)
        if self._admin is not None:
            self._admin.dispose()

    def heal(self) -> None:
        self._healed = True

    def _before(
        self,
        conn: sa.Connection,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        if self._healed:
            return
        with self._lock:
            if not (self.until_healed and self.fired):
                if not self.pattern.search(statement):
                    return
                self.matches += 1
                if self.matches != self.nth:
                    return
            self.fired.append(" ".join(statement.split()[:4]))
            first = len(self.fired) == 1
        if self.action is not None:
            if first:
                self.action()
            return
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        if self.kind == "error" and first:
            if self.postgres:
                raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
            raise sqlite3.OperationalError("disk I/O error")
        if self.postgres:
            assert self._admin is not None
            with self._admin.connect() as admin:
                # Waits (up to 10 s) until the server process is gone.
                gone = admin.execute(
                    sa.text("SELECT pg_terminate_backend(:pid, 10000)"),
                    {"pid": dbapi.info.backend_pid},
                ).scalar()
            assert gone, "the backend outlived pg_terminate_backend"
        elif self.until_healed and not first:
            raise sqlite3.OperationalError("database is locked")
        else:
            dbapi.close()


#: The statements of a mailing chunk's steps (``services.mailing``), each in its own
#: transaction: a connection dropped there fails that step of that chunk.
MAILING_STEPS = {
    # the print attempts (and daily-cap places), committed before any printer is asked
    "print_attempts": r"^INSERT INTO mailpieces",
    # the printers' answers: the postcards exist, the database does not know them yet
    "printer_answers": r"^UPDATE mailpieces SET provider_piece_id",
    # the follow-ups' ledger rows, written before Stripe, Klaviyo and the queue are called
    "follow_up_keys": r"^INSERT INTO side_effects",
    # the follow-ups' results and Sent, one transaction: the calls were made
    "follow_up_results": r"^UPDATE side_effects SET status",
    "sent": r"^UPDATE recipients SET .*\bsent_at=",
}


# -- what "nothing half-applied" means ------------------------------------------------------


def half_applied(shop: Shop) -> list[str]:
    """Every inconsistency between the app database and the sandbox vendors (an empty list
    when none): the invariants that must hold at any moment, mid-fault included."""
    with unit_of_work(shop.db_url) as session:
        recipients = session.execute(
            select(
                Recipient.id,
                Recipient.status,
                Recipient.batch_id,
                Recipient.claimed_by_run,
                Recipient.proof_front_url,
                Recipient.proof_back_url,
                Recipient.proof_image_ids,
                Recipient.offer_code,
            )
        ).all()
        pieces = session.execute(
            select(Mailpiece.recipient_id, Mailpiece.idempotency_key, Mailpiece.provider_piece_id)
        ).all()
        effects = session.execute(
            select(
                SideEffect.recipient_id,
                SideEffect.kind,
                SideEffect.idempotency_key,
                SideEffect.status,
            )
        ).all()
        leases = set(session.scalars(select(BatchLease.batch_id)))
        cap_used = int(
            session.scalar(
                select(func.coalesce(func.sum(SendCapUsage.used), 0)).where(
                    SendCapUsage.scope == CAMPAIGN
                )
            )
            or 0
        )
        capped = session.scalar(
            select(func.count()).select_from(Campaign).where(Campaign.daily_send_cap.is_not(None))
        )
    store = shared_store(shop.sandbox_path)
    printed = lob_keys(shop)
    metered = {e["identifier"] for e in shop.meter_events()}
    told = {e["unique_id"] for e in KlaviyoSandboxData(store).events("Postcard Sent")}
    hosted = {key for key, _doc in _scan(store, CloudflareImagesSandbox.IMAGES)}

    problems: list[str] = []
    claimed_batches = {r.batch_id for r in recipients if r.status in LEASED_STATES}
    for r in recipients:
        if r.status in LEASED_STATES and r.batch_id not in leases:
            problems.append(f"recipient {r.id} is {r.status} but batch {r.batch_id} has no lease")
        if r.status not in LEASED_STATES and r.claimed_by_run is not None:
            problems.append(f"recipient {r.id} is {r.status} and still carries a run's token")
        if r.status is S.PROOFED and not (r.proof_front_url and r.proof_back_url and r.offer_code):
            problems.append(f"recipient {r.id} is Proofed without its proof or offer code")
        if r.status is S.PROOFED and r.proof_image_ids and hosted:
            missing = set(r.proof_image_ids) - hosted
            if missing:
                problems.append(f"recipient {r.id} is Proofed with images never uploaded")
        if r.status in UNPROOFED and (r.proof_front_url or r.proof_image_ids):
            problems.append(f"recipient {r.id} is {r.status} with half a proof written")
    for batch in leases - claimed_batches:
        problems.append(f"lease of batch {batch} with no recipient claimed in it")

    keys = {p.idempotency_key for p in pieces}
    for key in sorted(printed - keys):
        problems.append(f"the printer holds {key}, which no print attempt row records")
    for p in pieces:
        if p.provider_piece_id is not None and p.idempotency_key not in printed:
            problems.append(f"piece {p.provider_piece_id} recorded, unknown to the printer")
    if capped and cap_used != len(pieces):
        problems.append(f"{cap_used} daily-cap places taken for {len(pieces)} print attempts")

    ledger = {e.idempotency_key: e for e in effects}
    for key in sorted((metered | told) - ledger.keys()):
        problems.append(f"vendor event {key} has no ledger row")
    for e in effects:
        if e.status != SideEffectStatus.DONE:
            continue
        if e.kind == "billing_meter" and e.idempotency_key not in metered:
            problems.append(f"{e.idempotency_key} is done but Stripe has no such meter event")
        if e.kind == "cdp_event" and e.idempotency_key not in told:
            problems.append(f"{e.idempotency_key} is done but Klaviyo has no such event")
    settled_of: dict[int, set[str]] = {}
    for e in effects:
        if e.status == SideEffectStatus.DONE:
            settled_of.setdefault(e.recipient_id, set()).add(e.kind)
    mailed = {p.recipient_id for p in pieces if p.provider_piece_id is not None}
    for r in recipients:
        if r.status is not S.SENT:
            continue
        if r.id not in mailed:
            problems.append(f"recipient {r.id} is Sent without a printed piece")
        if settled_of.get(r.id, set()) != set(FOLLOW_UPS):
            problems.append(f"recipient {r.id} is Sent with follow-ups unsettled")
    return problems


def lob_keys(shop: Shop) -> set[str]:
    """The idempotency keys of the postcards Lob's sandbox accepted (every scene here mails
    to the US, which Lob serves); the sandbox files them under ``<mode>:<key>``."""
    lob = sandbox_transports(shared_store(shop.sandbox_path))["lob"]
    return {key.split(":", 1)[1] for key in lob.accepted_keys()}


def _scan(store: Any, collection: str) -> Iterator[tuple[str, Any]]:
    after = 0
    while True:
        rows = store.scan(collection, after_seq=after, limit=500)
        for _seq, key, doc in rows:
            yield key, doc
        if len(rows) < 500:
            return
        after = rows[-1][0]


def assert_mailed_exactly_once(shop: Shop, ids: list[int]) -> None:
    """The end state of a mailing batch: everyone Sent, one postcard, one meter event, one
    Klaviyo event each, every follow-up done, no lease left."""
    assert shop.status(ids) == dict.fromkeys(ids, S.SENT)
    assert half_applied(shop) == []
    assert shop.printed() == {"lob": len(ids), "stannp": 0, "intelliprint": 0}, "one each"
    assert lob_keys(shop) == {printer_key(rid) for rid in ids}
    assert sorted(e["identifier"] for e in shop.meter_events()) == sorted(
        side_effect_key("billing_meter", rid) for rid in ids
    )
    klaviyo = KlaviyoSandboxData(shared_store(shop.sandbox_path)).events("Postcard Sent")
    assert sorted(e["unique_id"] for e in klaviyo) == sorted(
        side_effect_key("cdp_event", rid) for rid in ids
    )
    with unit_of_work(shop.db_url) as session:
        effects = Counter(
            (kind, status)
            for kind, status in session.execute(select(SideEffect.kind, SideEffect.status))
        )
        leases = session.scalar(select(func.count()).select_from(BatchLease))
        pieces = Counter(session.scalars(select(Mailpiece.status)))
    assert effects == Counter({(kind, SideEffectStatus.DONE): len(ids) for kind in FOLLOW_UPS})
    assert pieces == Counter({MailpieceStatus.CREATED: len(ids)})
    assert leases == 0, "a finished batch leaves no lease"


def assert_proofed(shop: Shop, ids: list[int]) -> None:
    assert shop.status(ids) == dict.fromkeys(ids, S.PROOFED)
    assert half_applied(shop) == []
    images = shared_store(shop.sandbox_path).count(CloudflareImagesSandbox.IMAGES)
    assert images == 2 * len(ids), "a re-proof uploads under the same image ids"
    with unit_of_work(shop.db_url) as session:
        assert session.scalar(select(func.count()).select_from(BatchLease)) == 0


# -- scenes ---------------------------------------------------------------------------------


def mailing_batch(shop: Shop, n: int = MAILED) -> tuple[int, str, list[int]]:
    """An organization (Stripe customer, Klaviyo), a campaign under a daily cap (so every
    print attempt takes a place), ``n`` Proofed recipients claimed into a mailing batch."""
    org = shop.organization()
    campaign = shop.campaign(org)
    with unit_of_work(shop.db_url) as session:
        session.get_one(Campaign, campaign).daily_send_cap = 1_000
    ids = shop.recipients(campaign, n, S.PROOFED)
    return org, shop.claim(S.PROOFED, S.SENDING_STAGED, campaign), ids


def mail(shop: Shop, batch: str, services: MailingServices, run_id: str) -> MailingResult:
    return mail_batch(
        shop.sessions, batch, services, run_id=run_id, concurrency=CONCURRENCY, chunk_size=CHUNK
    )


def finish_mailing(shop: Shop, batch: str, org: int) -> int:
    """What the platform does after a faulty run: recovery (the clock past every lease)
    re-stages what was left in Sending, and a new mailing run resumes it. Returns how many
    rounds it took (0: the faulty run had finished the batch itself)."""
    rounds = 0
    while _batch_ids(shop, batch):
        recovered = shop.recover(after=LATER)
        assert recovered.mailing_batches == [(batch, org)], recovered
        rounds += 1
        resumed = mail(shop, batch, shop.mailing(), run_id=f"resume-{rounds}")
        assert (resumed.lost, resumed.errors, resumed.deferred) == (0, {}, {})
        assert rounds <= 2, "recovery and a new run finish the batch"
    return rounds


def _batch_ids(shop: Shop, batch: str) -> list[int]:
    """The batch's recipients not Sent yet."""
    with unit_of_work(shop.db_url) as session:
        return list(
            session.scalars(
                select(Recipient.id).where(Recipient.batch_id == batch, Recipient.status != S.SENT)
            )
        )


def lease_of(shop: Shop, batch: str) -> Any:
    with unit_of_work(shop.db_url) as session:
        return BatchLeases(session).get(batch)


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None


def in_thread(work: Callable[[], Any], timeout: float = RUN_TIMEOUT) -> Outcome:
    """Run ``work`` in a thread of its own (as a run worker runs its op) and wait for it."""
    outcome = Outcome()

    def target() -> None:
        try:
            outcome.value = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.error = exc

    thread = threading.Thread(target=target, name="faulty-run", daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the run did not end within {timeout} s"
    return outcome


class AfterCreates(Printer):
    """The real (sandbox) printer; ``then`` is called once, right after the ``after``-th
    postcard was accepted and before its answer reaches the run."""

    def __init__(self, inner: Printer, after: int, then: Callable[[], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.after = after
        self.then = then
        self.creates = 0
        self._lock = threading.Lock()

    def create_postcard(self, request: PostcardRequest) -> Any:
        piece = self.inner.create_postcard(request)
        with self._lock:
            self.creates += 1
            now = self.creates == self.after
        if now:
            self.then()
        return piece

    def find_postcard(self, idempotency_key: str, recipient_id: int) -> Any:
        return self.inner.find_postcard(idempotency_key, recipient_id)

    def cancel_postcard(self, provider_piece_id: str) -> None:
        self.inner.cancel_postcard(provider_piece_id)

    def parse_webhook(self, envelope: Any) -> Any:
        return self.inner.parse_webhook(envelope)


def with_lob(services: MailingServices, lob: Printer) -> MailingServices:
    printers = {**services.printers.printers, "lob": lob}
    return replace(services, printers=PrinterStrategy(DEFAULT_ROUTES, printers))


@pytest.fixture
def shop(db_url: str, tmp_path: Path) -> Shop:
    return Shop(db_url, tmp_path)


@pytest.fixture
def private_shop(dbfaults_pg_url: str, tmp_path: Path) -> Shop:
    return Shop(dbfaults_pg_url, tmp_path)


# -- connections dropped (SQLite and PostgreSQL) ---------------------------------------------


@pytest.mark.parametrize("kind", ["drop", "error"])
@pytest.mark.parametrize("step", sorted(MAILING_STEPS))
def test_a_statement_failing_mid_mailing_step_is_retried_and_nothing_is_half_applied(
    shop: Shop, step: str, kind: str
) -> None:
    """The second chunk to reach ``step`` loses its connection (``drop``) or has the
    statement fail (``error``) mid-transaction: that step's transaction is rolled back as a
    whole, the chunk is taken again recipient by recipient from what the ledger holds
    (asking the printer about an attempt already written before printing), and the run
    still mails everyone exactly once."""
    org, batch, ids = mailing_batch(shop)

    with ConnectionFault(shop.db_url, MAILING_STEPS[step], nth=2, kind=kind) as fault:
        result = mail(shop, batch, shop.mailing(), FAULTY_RUN)

    assert len(fault.fired) == 1, f"the fault fell on {step}"
    assert (result.sent, result.lost, result.errors, result.deferred) == (MAILED, 0, {}, {})
    # Only the chunk whose printers' answers were lost asks the printer before printing.
    assert result.reconciled == (CHUNK if step == "printer_answers" else 0)
    # Every postcard was created by this run, the failed chunk's too.
    assert result.created == MAILED
    assert finish_mailing(shop, batch, org) == 0
    assert_mailed_exactly_once(shop, ids)


def test_a_database_away_mid_mailing_run_fails_it_cleanly_and_recovery_finishes(
    shop: Shop,
) -> None:
    """From the first write of a printer's answer on, every statement fails (the database is
    away): the run fails with the database's error, leaves its batch leased to itself (to
    expire), and the postcards the printer accepted meanwhile are known to the ledger by
    their keys only. Recovery returns the batch; the new run reconciles those postcards with
    the printer instead of printing them again."""
    _org, batch, ids = mailing_batch(shop)

    with ConnectionFault(shop.db_url, MAILING_STEPS["printer_answers"], until_healed=True) as fault:
        failed = in_thread(lambda: mail(shop, batch, shop.mailing(), FAULTY_RUN))
        fault.heal()

    assert failed.error is not None and is_outage(failed.error), failed
    printed = shop.printed()["lob"]
    known = sum(1 for p in shop.mailpieces().values() if p.provider_piece_id is not None)
    assert printed >= CHUNK and known == 0, "the printer has postcards the ledger awaits"
    assert shop.status(ids) == dict.fromkeys(ids, S.SENDING)
    lease = lease_of(shop, batch)
    assert lease is not None and lease.holder == FAULTY_RUN, "left to expire, not released"
    assert half_applied(shop) == []

    recovered = shop.recover(after=LATER)
    assert recovered.returned == Counter({"Sending": MAILED})
    assert set(recovered.failed_runs) == {FAULTY_RUN}
    resumed = mail(shop, batch, shop.mailing(), "resume-1")
    assert resumed.sent == MAILED
    assert (resumed.reconciled, resumed.created) == (printed, MAILED - printed)
    assert_mailed_exactly_once(shop, ids)


def test_a_connection_dropped_mid_proofing_write_fails_the_run_and_recovery_finishes(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proofing writes its results in groups; the second group's transaction loses its
    connection. The run fails with the database's error: the first group is Proofed, the
    rest wait in Proofing under the run's lease (left to expire) with nothing of their proof
    written. Recovery returns them to Pending; the next batch proofs them with the same
    image ids (nothing uploaded twice)."""
    monkeypatch.setattr(proofing, "FLUSH_EVERY", 4)
    org = shop.organization()
    campaign = shop.campaign(org)
    ids = shop.recipients(campaign, 10)
    batch = shop.claim(S.PENDING, S.PROOFING_STAGED, campaign)
    renderer, images = shop.renderer(), shop.images()

    with ConnectionFault(
        shop.db_url, r"^UPDATE recipients SET status=.*proof_front_url", nth=2
    ) as fault:
        failed = in_thread(
            lambda: proof_batch(
                shop.sessions, batch, renderer, images, id_key=PROOF_KEY, run_id=FAULTY_RUN
            )
        )

    assert fault.fired
    assert half_applied(shop) == []
    assert failed.error is not None and is_outage(failed.error), failed
    assert Counter(shop.status(ids).values()) == Counter({S.PROOFED: 4, S.PROOFING: 6})
    lease = lease_of(shop, batch)
    assert lease is not None and lease.holder == FAULTY_RUN

    recovered = shop.recover(after=LATER)
    assert recovered.returned == Counter({"Proofing": 6})
    assert set(recovered.failed_runs) == {FAULTY_RUN}
    again = proof_batch(
        shop.sessions,
        shop.claim(S.PENDING, S.PROOFING_STAGED, campaign),
        renderer,
        images,
        id_key=PROOF_KEY,
    )
    assert (again.proofed, again.codes_kept) == (6, 6)
    assert_proofed(shop, ids)


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(r"^UPDATE recipients SET status=", id="returning_recipients"),
        pytest.param(r"^INSERT INTO batch_leases", id="opening_the_new_lease"),
    ],
)
def test_a_connection_dropped_mid_recovery_changes_nothing_and_the_next_tick_recovers(
    shop: Shop, statement: str
) -> None:
    """Recovery returns a dead run's Sending batch in one transaction (the expired lease
    deleted, the recipients re-staged, a new lease opened). Dropped half-way, it changes
    nothing: the dead run's lease and recipients are as they were, so the next tick
    returns the batch, and the mailing run it asks for finishes it."""
    org, batch, ids = mailing_batch(shop, n=4)
    dead = BatchHold(shop.sessions, batch, "dead-run")
    assert sorted(dead.start(S.SENDING_STAGED, S.SENDING) or []) == ids  # then it died

    with ConnectionFault(shop.db_url, statement) as fault, pytest.raises(sa.exc.DBAPIError) as e:
        shop.recover(after=LATER)

    assert fault.fired and is_outage(e.value)
    assert shop.status(ids) == dict.fromkeys(ids, S.SENDING)
    lease = lease_of(shop, batch)
    assert lease is not None and lease.holder == "dead-run", "the dead run's lease, still"
    assert half_applied(shop) == []

    recovered = shop.recover(after=LATER)
    assert recovered.returned == Counter({"Sending": 4})
    assert recovered.failed_runs.keys() == {"dead-run"}
    assert recovered.mailing_batches == [(batch, org)]
    resumed = mail(shop, batch, shop.mailing(), "resume-1")
    assert (resumed.sent, resumed.created) == (4, 4)
    assert_mailed_exactly_once(shop, ids)


def test_a_connection_dropped_while_applying_status_webhooks_dead_letters_nothing(
    db_url: str, make_campaign: Any, add_recipients: Any
) -> None:
    """Status tracking applies a pass's messages in one transaction, each in a savepoint; a
    dropped connection in the third message's savepoint is the database's fault, not the
    message's: the pass fails, nothing is applied or dead-lettered or deleted, and every
    message comes back after the visibility timeout and is applied then."""
    _, campaign = make_campaign()
    ids = add_recipients(campaign, 6, S.SENT, sent_at=datetime.now(UTC))
    for i, rid in enumerate(ids):
        record_piece(db_url, rid, "lob", f"psc_fault_{i}")
    clock = FakeClock()
    queue = LocalQueue(":memory:", "mail-status", visibility_timeout=120, clock=clock)
    queue.send_batch(
        [
            lob_message(lob_event(f"evt_fault_{i}", f"psc_fault_{i}", "postcard.delivered"))
            for i in range(len(ids))
        ]
    )
    sessions = functools.partial(unit_of_work, db_url)
    printers = signing_printers()

    with ConnectionFault(db_url, r"^INSERT INTO mailpiece_events", nth=3) as fault:
        failed = in_thread(lambda: process_status_queue(sessions, queue, printers))

    assert fault.fired and failed.error is not None and is_outage(failed.error), failed
    assert queue.dead_letters() == []
    with unit_of_work(db_url) as session:
        assert session.scalar(select(func.count()).select_from(MailpieceEvent)) == 0
        assert set(session.scalars(select(Recipient.status))) == {S.SENT}
    clock.advance(121)
    again = process_status_queue(sessions, queue, printers)
    assert (again.updates_applied, again.recipients_received, again.dead_lettered) == (6, 6, 0)
    assert again.messages_deleted == 6
    with unit_of_work(db_url) as session:
        assert set(session.scalars(select(Recipient.status))) == {S.RECEIVED}
    queue.close()


@pytest.mark.postgres
def test_idle_pooled_connections_terminated_by_the_server_are_replaced_before_use(
    db_url: str, shop: Shop
) -> None:
    """``pg_terminate_backend`` on every connection the process keeps idle in its pool (an
    operator, a failover, an idle timeout): the next unit of work - a sensor's tick, a lease
    renewal - succeeds at its first try, on a fresh connection (the pool pings each
    connection before handing it out)."""
    _org, batch, _ids = mailing_batch(shop, n=2)
    hold = BatchHold(shop.sessions, batch, "live-run")
    assert hold.start(S.SENDING_STAGED, S.SENDING) is not None
    engine = engine_for(db_url)
    _fill_pool(engine, 3)
    idle = _backends_of_this_database(db_url)
    assert len(idle) >= 3

    _terminate(db_url, idle)

    with _counting_connects(engine) as connects:
        assert hold.renew(), "the lease renewal's first try after the drop"
        assert shop.recover(after=timedelta(0)).returned == Counter(), (
            "the recovery sensor's unit of work"
        )
    assert connects, "the dead connections were replaced by new ones"


# -- PostgreSQL restarted or crashed (a private server) --------------------------------------


@pytest.mark.postgres
def test_postgres_restarted_mid_mailing_run_loses_nothing_and_prints_nothing_twice(
    private_shop: Shop, dbfaults_cluster: PrivateCluster
) -> None:
    """``pg_ctl restart -m fast`` while a chunk is writing its follow-ups' ledger rows (its
    printers have answered): every session is cut, the run's pool reconnects, the chunk is
    taken again from the ledger; whatever the restart window failed is resumed after
    recovery. Every recipient ends Sent, one postcard and one event of each kind apiece."""
    shop = private_shop
    org, batch, ids = mailing_batch(shop)
    before = len(dbfaults_cluster.starts)
    engine = engine_for(shop.db_url)

    def restart() -> None:
        dbfaults_cluster.restart(mode="fast")

    with (
        ConnectionFault(shop.db_url, MAILING_STEPS["follow_up_keys"], nth=2, action=restart),
        _counting_connects(engine) as connects,
    ):
        run = in_thread(lambda: mail(shop, batch, shop.mailing(), FAULTY_RUN))

    assert len(dbfaults_cluster.starts) == before + 1, "the server was restarted"
    assert run.error is None, "the server was back before the run ended: no failure"
    result: MailingResult = run.value
    assert result.sent + len(result.deferred) == MAILED and result.lost == 0
    assert connects, "the run's pool reconnected after the restart"
    assert half_applied(shop) == []
    finish_mailing(shop, batch, org)
    assert_mailed_exactly_once(shop, ids)


@pytest.mark.postgres
def test_postgres_crashed_mid_proofing_write_fails_the_run_and_recovery_finishes(
    private_shop: Shop, dbfaults_cluster: PrivateCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server crashes (``pg_ctl restart -m immediate``: no shutdown, WAL recovery at
    start) while proofing writes its second group of results: the run fails with the
    database's error, the group is not half-written, recovery returns the rest to Pending
    and the next batch proofs them."""
    monkeypatch.setattr(proofing, "FLUSH_EVERY", 4)
    shop = private_shop
    campaign = shop.campaign(shop.organization())
    ids = shop.recipients(campaign, 10)
    batch = shop.claim(S.PENDING, S.PROOFING_STAGED, campaign)
    renderer, images = shop.renderer(), shop.images()

    def crash() -> None:
        dbfaults_cluster.restart(mode="immediate")

    with ConnectionFault(
        shop.db_url, r"^UPDATE recipients SET status=.*proof_front_url", nth=2, action=crash
    ):
        failed = in_thread(
            lambda: proof_batch(
                shop.sessions, batch, renderer, images, id_key=PROOF_KEY, run_id=FAULTY_RUN
            )
        )

    assert half_applied(shop) == []
    assert failed.error is not None and is_outage(failed.error), failed
    assert Counter(shop.status(ids).values()) == Counter({S.PROOFED: 4, S.PROOFING: 6})
    assert shop.recover(after=LATER).returned == Counter({"Proofing": 6})
    again = proof_batch(
        shop.sessions,
        shop.claim(S.PENDING, S.PROOFING_STAGED, campaign),
        renderer,
        images,
        id_key=PROOF_KEY,
    )
    assert again.proofed == 6
    assert_proofed(shop, ids)


@pytest.mark.postgres
def test_postgres_down_mid_mailing_run_then_back_the_recovery_sensor_resumes_the_batch(
    private_shop: Shop, dbfaults_cluster: PrivateCluster
) -> None:
    """The server stops right after the fifth postcard was accepted and stays down until the
    run has ended: the run fails cleanly (the database's error, its lease left to expire).
    The server comes back; the real recovery sensor - whose engine is the one the run used
    before the outage - returns the batch and asks for a mailing run, which reconciles with
    the printer and finishes the batch."""
    shop = private_shop
    _org, batch, ids = mailing_batch(shop)
    healthy = shop.mailing()
    lob = AfterCreates(
        healthy.printers.printers["lob"], 5, lambda: dbfaults_cluster.stop(mode="fast")
    )

    failed = in_thread(lambda: mail(shop, batch, with_lob(healthy, lob), FAULTY_RUN))
    assert not dbfaults_cluster.is_up()
    dbfaults_cluster.start()

    assert failed.error is not None and is_outage(failed.error), failed
    assert lob.creates >= 5
    assert half_applied(shop) == []
    assert lease_of(shop, batch).holder == FAULTY_RUN, "left to expire"
    resources = {"database": Database(url=shop.db_url)}
    sensor = recovery_sensor(clock=lambda: datetime.now(UTC) + LATER)
    with dg.instance_for_test() as instance:
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources))
    (request,) = tick.run_requests
    assert request.tags["mail_pipeline/batch"] == batch
    resumed = mail(shop, batch, healthy, "resume-1")
    assert resumed.sent == MAILED and resumed.reconciled >= 1
    assert_mailed_exactly_once(shop, ids)


@pytest.mark.postgres
def test_a_crash_restart_leaves_the_long_lived_engine_working_at_the_first_try(
    private_shop: Shop, dbfaults_cluster: PrivateCluster
) -> None:
    """A process that lives on (the daemon's sensors, a run's renewal thread) keeps its
    engine and pool across a crash-restart of the server: its next unit of work succeeds at
    the first try, on new connections."""
    shop = private_shop
    _org, batch, _ids = mailing_batch(shop, n=2)
    hold = BatchHold(shop.sessions, batch, "live-run")
    assert hold.start(S.SENDING_STAGED, S.SENDING) is not None
    engine = engine_for(shop.db_url)
    _fill_pool(engine, 3)

    dbfaults_cluster.restart(mode="immediate")

    with _counting_connects(engine) as connects:
        assert hold.renew(), "the lease renewal's first try after the restart"
        assert shop.recover(after=timedelta(0)).returned == Counter(), (
            "the recovery sensor's unit of work"
        )
    assert connects, "the pool replaced the connections the crash killed"


@pytest.mark.postgres
def test_the_lease_renewal_thread_outlives_a_postgres_outage(
    private_shop: Shop, dbfaults_cluster: PrivateCluster
) -> None:
    """A run's renewal thread meets the server down (its renewals fail), and renews again
    once the server is back: the run keeps its batch, and the thread was never restarted."""
    shop = private_shop
    _org, batch, _ids = mailing_batch(shop, n=2)
    failures: list[BaseException] = []

    @contextmanager
    def sessions() -> Iterator[Session]:
        try:
            with unit_of_work(shop.db_url) as session:
                yield session
        except BaseException as exc:
            failures.append(exc)
            raise

    policy = LeasePolicy(running=timedelta(seconds=30), renew_every=timedelta(seconds=0.1))
    hold = BatchHold(sessions, batch, "live-run", policy=policy)
    assert hold.start(S.SENDING_STAGED, S.SENDING) is not None
    with hold:
        before = _wait_for(lambda: _renewed_after(shop, batch, None), "a first renewal")
        dbfaults_cluster.stop(mode="fast")
        _wait_for(lambda: failures, "a renewal that met the server down")
        dbfaults_cluster.start()
        _wait_for(lambda: _renewed_after(shop, batch, before), "a renewal after the restart")
        assert not hold.lost.is_set()
    assert failures and all(is_outage(f) for f in failures)


# -- helpers of the tests above -------------------------------------------------------------


def _fill_pool(engine: sa.Engine, n: int) -> None:
    """Leave ``n`` connections idle in the engine's pool."""
    held = [engine.connect() for _ in range(n)]
    for conn in held:
        conn.execute(sa.text("SELECT 1"))
    for conn in held:
        conn.close()


def _backends_of_this_database(url: str) -> list[int]:
    with _admin(url) as admin:
        return [
            int(pid)
            for pid in admin.scalars(
                sa.text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        ]


def _terminate(url: str, pids: list[int]) -> None:
    with _admin(url) as admin:
        for pid in pids:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})


@contextmanager
def _admin(url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(
        normalize_url(url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@contextmanager
def _counting_connects(engine: sa.Engine) -> Iterator[list[object]]:
    """A list that gets an item for each new connection the engine's pool makes in the
    block."""
    made: list[object] = []

    def connected(dbapi: object, _record: object) -> None:
        made.append(dbapi)

    event.listen(engine, "connect", connected)
    try:
        yield made
    finally:
        event.remove(engine, "connect", connected)


def _renewed_after(shop: Shop, batch: str, before: datetime | None) -> datetime | None:
    with unit_of_work(shop.db_url) as session:
        renewed = session.scalar(select(BatchLease.renewed_at).where(BatchLease.batch_id == batch))
    if renewed is None or (before is not None and renewed <= before):
        return None
    return renewed


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout} s for {what}, in vain")

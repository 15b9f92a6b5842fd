"""Run-failure alerts: record each failed run, tell people once (rules: ``domain.alerts``).

:func:`record_and_notify` is one sensor tick: the failures it was given are recorded (a run
seen again is recorded once), then every failure nobody was told about - these and any a
previous tick could not send - is planned into messages (one per run, or a digest when many
failed together) and sent. A message's runs are marked notified only after the channel
accepted it, so a run is announced at most once and, while the channel works, at least once.
A channel that fails stops the tick's sending: the rest wait for the next tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mail_pipeline.db.alerts import RunFailureGateway
from mail_pipeline.db.engine import SessionFactory
from mail_pipeline.domain.alerts import Failure, Notification
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.notifications import Notifier

Planner = Callable[[Sequence[Failure]], list[Notification]]


@dataclass
class AlertOutcome:
    recorded: int = 0
    sent: int = 0
    runs_notified: int = 0
    #: Runs still waiting to be announced (the channel failed, or more than one tick's worth).
    waiting: int = 0
    #: Why sending stopped, if it did.
    error: IntegrationError | None = None
    subjects: list[str] = field(default_factory=list)


def record_and_notify(
    sessions: SessionFactory,
    failures: Sequence[Failure],
    notifier: Notifier,
    plan: Planner,
    now: datetime,
) -> AlertOutcome:
    outcome = AlertOutcome()
    with sessions() as session:
        outcome.recorded = RunFailureGateway(session).record(failures)
    with sessions() as session:
        waiting = RunFailureGateway(session).unnotified()
    pending = {f.run_id for f in waiting}
    for notification in plan(waiting):
        try:
            notifier.send(notification)
        except IntegrationError as error:
            outcome.error = error
            break
        with sessions() as session:
            RunFailureGateway(session).mark_notified(notification.run_ids, now)
        outcome.sent += 1
        outcome.runs_notified += len(notification.run_ids)
        outcome.subjects.append(notification.subject)
        pending -= set(notification.run_ids)
    outcome.waiting = len(pending)
    return outcome

"""Campaign lifecycle and organization management as jobs and schedules (rules:
``domain.lifecycle``; use cases: ``services.lifecycle``). All times are New York.

- ``campaign_lifecycle_job``, hourly at :00: start the campaigns whose start date has come,
  then complete those with nothing remaining (two ops, in that order).
- ``nightly_job``: ``plan_night`` -> ``postage_downgrades`` (2:00) -> ``csm_cadence_updates``
  (3:00) -> ``scheduled_campaign_switchoffs`` (3:30), each op depending on the one before:
  the order is the graph, as the UI shows it. One schedule per step, at the seed's time,
  launches the job *through* its step: the 2:00 run does the downgrade only, the 3:30 run
  does any step of that night not done yet and then the switch-offs. A step is done once per
  night (``nightly_step_runs``); the other runs show it as already done.
  A missed night (the daemon was down) is caught up once: when the daemon comes back, each
  schedule launches its latest missed tick (Dagster does not catch up a schedule without
  partitions further back than that), each with its night's date in the run key, and the
  runs queue one at a time (stage ``lifecycle``, limit 1 in ``dagster.yaml``).
- ``organization_status_job``, every 10 minutes: disable organizations churned 180 days ago.

On demand, for everyone or one organization or campaign (the ``requested_by`` and ``reason``
tags are required outside the schedules):

    dagster job launch -w workspace.yaml -j nightly_job \\
      --config-json '{"ops": {"plan_night": {"config": {"night": "2026-11-29",
                       "campaign_ids": [12]}}}}' \\
      --tags '{"mail_pipeline/requested_by": "ana@ops", "mail_pipeline/reason": "late"}'
"""

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import dagster as dg

from mail_pipeline.domain.lifecycle import NightlyStep, steps_through
from mail_pipeline.domain.metrics import day_of
from mail_pipeline.jobs import tags
from mail_pipeline.jobs.runs import check_launch
from mail_pipeline.partitions import BUSINESS_TIMEZONE
from mail_pipeline.resources.database import Database
from mail_pipeline.services.lifecycle import (
    LifecycleReport,
    Scope,
    complete_campaigns,
    disable_churned_organizations,
    run_nightly_step,
    start_campaigns,
)

STAGE = "lifecycle"
_TZ = ZoneInfo(BUSINESS_TIMEZONE)


class ScopeConfig(dg.Config):
    """Limit an on-demand run to some organizations or campaigns (default: everyone)."""

    organization_ids: list[int] = []
    campaign_ids: list[int] = []

    def scope(self) -> Scope:
        return Scope(tuple(self.organization_ids), tuple(self.campaign_ids))


class LifecycleConfig(ScopeConfig):
    #: The New York day to start campaigns as of (default: today).
    today: str | None = None


class NightlyConfig(ScopeConfig):
    #: The New York night (YYYY-MM-DD) the steps are for (default: today in New York).
    night: str | None = None
    #: The last step to do (default: all of them): postage_downgrades, csm_cadence_updates
    #: or scheduled_campaign_switchoffs.
    through: str = NightlyStep.SWITCHOFFS.value
    #: Re-apply a step already done for this night (each step is idempotent).
    force: bool = False


def _now() -> datetime:
    return datetime.now(_TZ)


def _day(text: str | None, field_name: str) -> date:
    if not text:
        return day_of(_now())
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise dg.Failure(
            description=f"{field_name} must be a date (YYYY-MM-DD): {text!r}"
        ) from error


def _report(context: dg.OpExecutionContext, report: LifecycleReport) -> dg.Output[None]:
    context.log.info(report.markdown())
    return dg.Output(
        None,
        metadata={
            "changed": len(report.changed),
            "waiting": len(report.waiting),
            "recipients_skipped": report.recipients_skipped,
            "already_done": report.already_done,
            "report": dg.MetadataValue.md(report.markdown()),
        },
    )


# --- hourly: start and complete ----------------------------------------------------------------


@dg.op(out=dg.Out(dg.Nothing))
def start_scheduled_campaigns(
    context: dg.OpExecutionContext, config: LifecycleConfig, database: Database
) -> dg.Output[None]:
    """Pending campaigns whose start date (New York) has come become Active."""
    check_launch(context)
    today = _day(config.today, "today")
    return _report(context, start_campaigns(database.session, today, _now(), config.scope()))


@dg.op(ins={"after_start": dg.In(dg.Nothing)})
def complete_finished_campaigns(
    context: dg.OpExecutionContext, config: ScopeConfig, database: Database
) -> dg.Output[None]:
    """Active campaigns with nothing remaining become Completed (the rule per mode:
    ``domain.lifecycle``)."""
    return _report(context, complete_campaigns(database.session, _now(), config.scope()))


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=900),
    description="Start the campaigns whose start date has come, then complete those with "
    "nothing left to process (hourly).",
)
def campaign_lifecycle_job() -> None:
    complete_finished_campaigns(after_start=start_scheduled_campaigns())


# --- nightly: ordered steps ----------------------------------------------------------------------


@dataclass(frozen=True)
class NightPlan:
    night: date
    steps: tuple[NightlyStep, ...]
    scope: Scope = field(default_factory=Scope)
    force: bool = False


@dg.op
def plan_night(context: dg.OpExecutionContext, config: NightlyConfig) -> NightPlan:
    """Which night, which steps (through ``through``), for whom."""
    check_launch(context)
    try:
        through = NightlyStep(config.through)
    except ValueError as error:
        raise dg.Failure(
            description=f"through must be one of {', '.join(s.value for s in NightlyStep)}, "
            f"not {config.through!r}"
        ) from error
    plan = NightPlan(
        night=_day(config.night, "night"),
        steps=tuple(steps_through(through)),
        scope=config.scope(),
        force=config.force,
    )
    context.log.info("night %s: %s", plan.night, ", ".join(step.value for step in plan.steps))
    return plan


def _step_op(step: NightlyStep, description: str) -> dg.OpDefinition:
    @dg.op(name=step.value, description=description)
    def _step(context: dg.OpExecutionContext, plan: NightPlan, database: Database) -> NightPlan:
        if step not in plan.steps:
            context.log.info("%s is not part of this run (due at %s)", step.value, step.due_at)
            context.add_output_metadata({"report": "not part of this run"})
            return plan
        report = run_nightly_step(
            database.session,
            step,
            plan.night,
            _now(),
            run_id=context.run_id,
            scope=plan.scope,
            force=plan.force,
        )
        context.log.info(report.markdown())
        context.add_output_metadata(
            {
                "night": plan.night.isoformat(),
                "changed": len(report.changed),
                "recipients_skipped": report.recipients_skipped,
                "already_done": report.already_done,
                "report": dg.MetadataValue.md(report.markdown()),
            }
        )
        return plan

    return _step


postage_downgrades = _step_op(
    NightlyStep.POSTAGE_DOWNGRADES,
    "2:00 - first-class campaigns become standard after their configured days (pieces "
    "already written for a printer keep their postage).",
)
csm_cadence_updates = _step_op(
    NightlyStep.CSM_CADENCE,
    "3:00 - organizations settled on weekly CSM check-ins move to biweekly.",
)
scheduled_campaign_switchoffs = _step_op(
    NightlyStep.SWITCHOFFS,
    "3:30 - campaigns past their mail date are completed; their unmailed recipients are "
    "Skipped with the reason.",
)


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=1800, retries=2),
    description="The nightly steps in their order: postage downgrades (2:00), CSM cadence "
    "(3:00), scheduled campaign switch-offs (3:30); each done once per night.",
)
def nightly_job() -> None:
    scheduled_campaign_switchoffs(csm_cadence_updates(postage_downgrades(plan_night())))


def _nightly_schedule(step: NightlyStep) -> dg.ScheduleDefinition:
    due = step.due_at

    @dg.schedule(
        name=f"{step.value}_schedule",
        cron_schedule=f"{due.minute} {due.hour} * * *",
        execution_timezone=BUSINESS_TIMEZONE,
        job=nightly_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{due:%H:%M} New York: nightly_job through {step.value} (earlier steps "
        "of the night first, if no run did them).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        night = day_of(context.scheduled_execution_time)
        return dg.RunRequest(
            run_key=f"nightly-{night.isoformat()}-{step.value}",
            run_config=dg.RunConfig(
                ops={"plan_night": NightlyConfig(night=night.isoformat(), through=step.value)}
            ),
            tags={tags.REQUESTED_BY: "schedule", tags.NIGHT: night.isoformat()},
        )

    return _schedule


NIGHTLY_SCHEDULES = [_nightly_schedule(step) for step in NightlyStep]


@dg.schedule(
    cron_schedule="0 * * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=campaign_lifecycle_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: start campaigns on their start date, complete finished ones.",
)
def campaign_lifecycle_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time
    return dg.RunRequest(
        run_key=f"lifecycle-{tick.isoformat()}",
        run_config=dg.RunConfig(
            ops={"start_scheduled_campaigns": LifecycleConfig(today=day_of(tick).isoformat())}
        ),
        tags={tags.REQUESTED_BY: "schedule"},
    )


# --- organizations -------------------------------------------------------------------------------


@dg.op
def disable_churned(
    context: dg.OpExecutionContext, config: ScopeConfig, database: Database
) -> dg.Output[None]:
    """Organizations churned 180 days ago become disabled; their automated campaigns pause."""
    check_launch(context)
    return _report(context, disable_churned_organizations(database.session, _now(), config.scope()))


@dg.job(
    tags=tags.job_tags(STAGE, max_runtime=600),
    description="Disable organizations churned for 180 days (every 10 minutes).",
)
def organization_status_job() -> None:
    disable_churned()


@dg.schedule(
    cron_schedule="*/10 * * * *",
    execution_timezone=BUSINESS_TIMEZONE,
    job=organization_status_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 10 minutes: disable organizations churned for 180 days.",
)
def organization_status_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"organization-status-{context.scheduled_execution_time.isoformat()}",
        tags={tags.REQUESTED_BY: "schedule"},
    )


JOBS = [campaign_lifecycle_job, nightly_job, organization_status_job]
SCHEDULES = [campaign_lifecycle_schedule, *NIGHTLY_SCHEDULES, organization_status_schedule]

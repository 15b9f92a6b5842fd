"""Drive the pipeline the way the daemon would, in-process: evaluate the schedule and the
sensors, execute each requested run, repeat until nothing moves."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from mail_pipeline.definitions import build_definitions

FAR_FUTURE = 10**10


def without_idling(run_config: Any) -> Any:
    """A sensor's stage run waits ``idle_seconds`` for new recipients once caught up; a test
    running it in process asks it to end at once instead (nothing else arrives meanwhile)."""
    config = copy.deepcopy(dict(run_config or {}))
    for op in config.get("ops", {}).values():
        if isinstance(op, dict) and "idle_seconds" in op.get("config", {}):
            op["config"]["idle_seconds"] = 0
    return config


@dataclass
class Driver:
    definitions: dg.Definitions
    resources: Mapping[str, Any]
    instance: dg.DagsterInstance
    cursors: dict[str, str | None] = field(default_factory=dict)
    runs: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    def execute(self, request: dg.RunRequest, job_name: str) -> dg.ExecuteInProcessResult:
        job = self.definitions.resolve_job_def(request.job_name or job_name)
        result = job.execute_in_process(
            run_config=without_idling(request.run_config),
            tags=request.tags,
            resources=dict(self.resources),
            instance=self.instance,
            raise_on_error=False,
        )
        self.runs.append(result)
        return result

    def tick_schedule(self, name: str) -> int:
        schedule = self.definitions.resolve_schedule_def(name)
        context = dg.build_schedule_context(
            instance=self.instance,
            resources=dict(self.resources),
            scheduled_execution_time=datetime.now(UTC),
        )
        data = schedule.evaluate_tick(context)
        for request in data.run_requests or []:
            self.execute(request, schedule.job_name)
        return len(data.run_requests or [])

    def tick_sensor(self, name: str) -> int:
        sensor = self.definitions.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            resources=dict(self.resources),
            sensor_name=name,
            definitions=self.definitions,
        )
        data = sensor.evaluate_tick(context)
        if data.cursor is not None:
            self.cursors[name] = data.cursor
        for request in data.run_requests or []:
            self.execute(request, sensor.job_name if sensor.has_jobs else "")
        return len(data.run_requests or [])

    def run_until_settled(
        self, *, deliver_webhooks: Callable[[], int], max_rounds: int = 30
    ) -> int:
        """Tick the pipeline sensors until a whole round launches nothing."""
        for round_number in range(1, max_rounds + 1):
            launched = sum(self.tick_sensor(name) for name in ("proofing_sensor", "mailing_sensor"))
            delivered = deliver_webhooks()
            launched += sum(
                self.tick_sensor(name) for name in ("mail_status_sensor", "image_cleanup_sensor")
            )
            if not launched and not delivered:
                return round_number
        raise AssertionError(f"the pipeline did not settle in {max_rounds} rounds")


def driver_for(settings: Any, resources: Mapping[str, Any], instance: dg.DagsterInstance) -> Driver:
    """``instance`` must be persistent (``dg.instance_for_test()``): schedules need one."""
    return Driver(build_definitions(settings), resources, instance)


def now() -> float:
    return time.time()

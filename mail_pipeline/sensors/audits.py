"""The audit queue's sensor (SPEC §3 ``audits.process_audits``, every minute): launches one
``audit_job`` run when audit requests wait and none is draining the queue already; the run
reads the messages (the sensor only looks at the queue's depth)."""

from mail_pipeline.jobs.audits import audit_job
from mail_pipeline.sensors.pipeline import queue_sensor

audit_sensor = queue_sensor(
    "audit_sensor",
    audit_job,
    "run_audits",
    lambda q: q.audit_queue(),
    interval_seconds=60,
)

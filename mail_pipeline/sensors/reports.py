"""The sensor that drains the report email events queue: when it has messages and no
draining run is in flight, it launches ``report_email_events_job`` (the mail-status sensor's
shape, ``sensors.pipeline.queue_sensor``)."""

from mail_pipeline.jobs.reports import report_email_events_job
from mail_pipeline.sensors.pipeline import queue_sensor

report_email_events_sensor = queue_sensor(
    "report_email_events_sensor",
    report_email_events_job,
    "apply_report_email_events",
    lambda q: q.report_email_events_queue(),
    interval_seconds=30,
)

JOBS = [report_email_events_job]
SENSORS = [report_email_events_sensor]

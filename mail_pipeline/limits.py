"""Limits that several parts of the code location must agree on, defined once.

``MAILING_RUNS_IN_FLIGHT`` is the number of mailing runs that may run at the same time. Two
places use it and must agree:

- the mailing sensor launches no more runs than this (``sensors/pipeline.py``);
- the Dagster run queue caps runs tagged ``mail_pipeline/stage: mailing`` at the same number
  (``dagster.yaml`` and ``deploy/dagster.production.yaml``), so runs launched by recovery or
  by hand cannot exceed it either. A test reads both files and compares.

It does not divide the printers' rate limits: the runs take their calls from one schedule per
API key in the app database (``db.ratelimit``, ``docs/rate_limits.md``), so one run alone
uses 95 % of a printer's limit and any number together use the same 95 %. Only a
``PrintersResource`` built without a database falls back to a fixed share of
``1 / MAILING_RUNS_IN_FLIGHT`` of 95 % per process.

Raising it serves more organizations at once; a printer's throughput stays its rate limit.
"""

from __future__ import annotations

#: Mailing runs that may be in flight at once (and so share one printer API key).
MAILING_RUNS_IN_FLIGHT = 4

#: Proofing runs that may be in flight at once (the proofing sensor's cap, and the local run
#: queue's ``mail_pipeline/stage: proofing`` limit; a test compares them). A stage run serves
#: one organization and keeps claiming its work (``services.staging.keep_claiming``), so the
#: number is also how many organizations are served by a warm run at once; four keeps a
#: trickle's latency low without a run per batch.
PROOFING_RUNS_IN_FLIGHT = 4

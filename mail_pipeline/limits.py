"""Limits that several parts of the code location must agree on, defined once.

``MAILING_RUNS_IN_FLIGHT`` is the number of mailing runs that may run at the same time. Three
places use it and must agree:

- the mailing sensor launches no more runs than this (``sensors/pipeline.py``);
- each mailing run's printer client keeps to ``1 / MAILING_RUNS_IN_FLIGHT`` of 95% of the
  printer's published rate limit (``PrintersResource.runs_sharing_key``), so the runs together
  never draw a 429;
- the Dagster run queue caps runs tagged ``mail_pipeline/stage: mailing`` at the same number
  (``dagster.yaml`` and ``deploy/dagster.production.yaml``), so runs launched by recovery or
  by hand cannot exceed it either. A test reads both files and compares.

Raising it gives each run a smaller share of the printer's limit: throughput per printer stays
the same, more organizations are served at once.
"""

from __future__ import annotations

#: Mailing runs that may be in flight at once (and so share one printer API key).
MAILING_RUNS_IN_FLIGHT = 2

"""The kinds of environment a process or a database serves.

A process learns its kind once, in :mod:`mail_pipeline.settings`; an app database records the
kind it was created for (``app_environment``), so a process of another kind can refuse it.
"""

from __future__ import annotations

from enum import StrEnum


class Environment(StrEnum):
    LOCAL = "local"
    TEST = "test"
    PRODUCTION = "production"

"""The sandbox vendors' shared state as a resource (local and test environments only)."""

from __future__ import annotations

import functools

import dagster as dg

from mail_pipeline.integrations.sandbox.store import SandboxStore


@functools.cache
def _store(path: str) -> SandboxStore:
    return SandboxStore(path)


class SandboxState(dg.ConfigurableResource):
    """Path of the SQLite file where the sandbox vendors keep what they were sent."""

    path: str

    def store(self) -> SandboxStore:
        return _store(self.path)

"""The sandbox vendors' shared state as a resource (local and test environments only)."""

from __future__ import annotations

import functools

import dagster as dg

from mail_pipeline.integrations.sandbox.store import SandboxStore


@functools.cache
def shared_store(path: str) -> SandboxStore:
    """One store object per file per process, shared by every sandbox resource."""
    return SandboxStore(path)


class SandboxState(dg.ConfigurableResource):
    """Path of the SQLite file where the sandbox vendors keep what they were sent."""

    path: str

    def store(self) -> SandboxStore:
        return shared_store(self.path)

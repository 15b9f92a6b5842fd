"""The shared HTTP layer's client: one per vendor account, however many threads start at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from mail_pipeline.integrations import http
from mail_pipeline.integrations.http import HttpApi


def test_threads_starting_at_once_share_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's pool threads all make their first call together; they must get one client,
    not one each (a TLS context and a connection pool per thread, all but one left open)."""
    made: list[httpx.Client] = []
    real = httpx.Client

    def slow_client(*args: Any, **kwargs: Any) -> httpx.Client:
        time.sleep(0.05)  # building a client takes a while: the window the threads race in
        client = real(*args, **kwargs)
        made.append(client)
        return client

    monkeypatch.setattr(http.httpx, "Client", slow_client)
    api = HttpApi(
        "lob",
        "https://api.lob.test/v1",
        transport=httpx.MockTransport(lambda r: httpx.Response(200)),
    )
    start = threading.Barrier(16)
    seen: list[httpx.Client] = []

    def first_call() -> None:
        start.wait()
        seen.append(api.client)

    threads = [threading.Thread(target=first_call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(made) == 1
    assert {id(c) for c in seen} == {id(made[0])}
    api.close()


def test_a_client_keeps_a_connection_per_sending_thread() -> None:
    api = HttpApi("lob", "https://api.lob.test/v1")
    pool = api.client._transport._pool  # type: ignore[attr-defined]
    assert pool._max_keepalive_connections >= 32, "a mailing run sends from 32 threads"
    api.close()

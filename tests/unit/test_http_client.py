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
    transport = api.client._transport  # type: ignore[attr-defined]
    assert isinstance(transport, http.PooledTransport)
    kept = sum(p._pool._max_keepalive_connections for p in transport._pools)
    assert kept >= 32, "a mailing run sends from 32 threads"
    api.close()


def test_sending_threads_are_spread_over_the_pools_one_pool_each() -> None:
    """Each thread keeps to one pool (its connections stay warm) and the threads are
    given the pools in turn, so no pool holds the connections of most threads."""
    transport = http.PooledTransport(shards=4)
    transport.close()
    served: list[tuple[int, int]] = []
    lock = threading.Lock()

    def pool(index: int) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            with lock:
                served.append((index, threading.get_ident()))
            return httpx.Response(200)

        return httpx.MockTransport(answer)

    transport._pools = [pool(i) for i in range(4)]  # type: ignore[list-item]
    client = httpx.Client(transport=transport, base_url="https://api.lob.test")
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        for _ in range(3):
            client.get("/v1/postcards")

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    pools_of_thread: dict[int, set[int]] = {}
    for index, thread_id in served:
        pools_of_thread.setdefault(thread_id, set()).add(index)
    assert len(served) == 24
    assert all(len(pools) == 1 for pools in pools_of_thread.values())
    threads_per_pool = [
        sum(1 for pools in pools_of_thread.values() if i in pools) for i in range(4)
    ]
    assert threads_per_pool == [2, 2, 2, 2]


def test_a_proxy_in_the_environment_keeps_httpx_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx honours HTTPS_PROXY only with its own transport: a client then keeps it."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    api = HttpApi("lob", "https://api.lob.test/v1")
    assert not isinstance(api.client._transport, http.PooledTransport)  # type: ignore[attr-defined]
    assert any(mount is not None for mount in api.client._mounts.values())  # type: ignore[attr-defined]
    api.close()

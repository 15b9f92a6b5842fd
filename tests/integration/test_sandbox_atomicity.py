"""A sandbox vendor applies a request whole: a failure half-way through a create leaves no
idempotency key behind (which would later replay a postcard that was never stored)."""

from __future__ import annotations

import pytest

from mail_pipeline.domain.addresses import Address
from mail_pipeline.integrations.printers.base import PostcardRequest
from mail_pipeline.integrations.printers.lob import LobPrinter
from mail_pipeline.integrations.printers.sandbox.lob import LobSandbox
from mail_pipeline.integrations.sandbox.store import SandboxStore

REQUEST = PostcardRequest(
    idempotency_key="mailpiece-recipient-1",
    recipient_id=1,
    campaign_id=1,
    organization_id=1,
    to=Address.build(
        name="Jane Doe",
        line1="1 Oak St",
        city="Austin",
        region="TX",
        postal_code="78701",
        country="US",
    ),
    front_url="https://img.example/front.png",
    back_url="https://img.example/back.png",
)


def test_a_create_that_dies_half_way_stores_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    store = SandboxStore()
    sandbox = LobSandbox(store)
    printer = LobPrinter(sandbox.api_key, transport=sandbox, retry=None, sleep=lambda _: None)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the vendor's process died after writing the key and the piece")

    monkeypatch.setattr(sandbox, "schedule", crash)
    with pytest.raises(RuntimeError):
        printer.create_postcard(REQUEST)
    assert sandbox.created_count() == 0
    assert sandbox.accepted_keys() == []

    monkeypatch.undo()
    piece = printer.create_postcard(REQUEST)
    assert sandbox.created_count() == 1
    assert sandbox.piece(piece.provider_piece_id) is not None
    assert printer.create_postcard(REQUEST).provider_piece_id == piece.provider_piece_id


def test_nested_store_transactions_join_the_outer_one() -> None:
    store = SandboxStore()
    with pytest.raises(ValueError), store.transaction():
        store.put("c", "a", {"n": 1})
        with store.transaction():
            store.put("c", "b", {"n": 2})
        raise ValueError("roll everything back")
    assert store.count("c") == 0
    with store.transaction():
        store.put("c", "a", {"n": 1})
    assert store.count("c") == 1

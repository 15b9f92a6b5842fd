"""PrinterStrategy: the seed's routing table and organization preferences."""

from __future__ import annotations

import pytest

from mail_pipeline.domain.routing import NoRoute, choose_printer
from mail_pipeline.integrations.printers.base import Printer
from mail_pipeline.integrations.printers.sandbox import sandbox_printers
from mail_pipeline.integrations.printers.strategy import (
    DEFAULT_ROUTES,
    PRINTER_COUNTRIES,
    NoPrinterForCountry,
    PrinterStrategy,
    RoutingError,
)
from mail_pipeline.integrations.sandbox.store import SandboxStore


@pytest.fixture
def printers() -> dict[str, Printer]:
    return sandbox_printers(SandboxStore())


def test_the_default_table_is_the_seeds() -> None:
    assert dict(DEFAULT_ROUTES) == {"US": "lob", "GB": "stannp"}
    assert "US" in PRINTER_COUNTRIES["intelliprint"]


@pytest.mark.parametrize(
    ("country", "expected"),
    [
        ("US", "lob"),
        ("us", "lob"),
        ("United States", "lob"),
        ("GB", "stannp"),
        ("UK", "stannp"),
        ("United Kingdom", "stannp"),
    ],
)
def test_default_routes(printers: dict[str, Printer], country: str, expected: str) -> None:
    assert PrinterStrategy.default(printers).choose(country).name == expected


def test_a_preference_overrides_the_default_where_the_printer_serves(
    printers: dict[str, Printer],
) -> None:
    strategy = PrinterStrategy.default(printers)
    assert strategy.choose("US", "intelliprint").name == "intelliprint"
    assert strategy.choose("US", " IntelliPrint ").name == "intelliprint"
    assert strategy.choose("US", "lob").name == "lob"


def test_a_preference_the_printer_cannot_serve_falls_back(printers: dict[str, Printer]) -> None:
    strategy = PrinterStrategy.default(printers)
    assert strategy.choose("GB", "lob").name == "stannp"
    assert strategy.choose("US", "stannp").name == "lob"
    assert strategy.choose("US", "no-such-printer").name == "lob"


def test_an_unroutable_country_says_so(printers: dict[str, Printer]) -> None:
    strategy = PrinterStrategy.default(printers)
    with pytest.raises(NoPrinterForCountry, match="no printer mails to FR"):
        strategy.choose("France")
    with pytest.raises(NoPrinterForCountry, match="no printer mails to FR"):
        strategy.choose("FR", "lob")
    with pytest.raises(RoutingError, match="unknown country"):
        strategy.choose("")


def test_a_route_to_an_unconfigured_printer_says_so(printers: dict[str, Printer]) -> None:
    only_us = PrinterStrategy.default({"lob": printers["lob"]})
    assert only_us.choose("US", "intelliprint").name == "lob"
    with pytest.raises(NoPrinterForCountry, match="stannp is not configured"):
        only_us.choose("GB")


def test_the_tables_are_data(printers: dict[str, Printer]) -> None:
    strategy = PrinterStrategy(
        {"GB": "intelliprint"}, printers, serves={"intelliprint": frozenset({"GB"})}
    )
    assert strategy.choose("GB").name == "intelliprint"
    assert strategy.choose("GB", "stannp").name == "intelliprint"  # stannp serves nothing here


@pytest.mark.parametrize("country", ["US", "GB", "FR"])
@pytest.mark.parametrize("preference", [None, "lob", "stannp", "intelliprint"])
def test_mailing_routes_as_the_sync_judged(
    printers: dict[str, Printer], country: str, preference: str | None
) -> None:
    """The sync judges routes with the domain's rule; mailing must choose the same printer."""
    strategy = PrinterStrategy.default(printers)
    try:
        judged = choose_printer(country, preference)
    except NoRoute:
        with pytest.raises(NoPrinterForCountry):
            strategy.choose(country, preference)
        return
    assert strategy.choose(country, preference).name == judged

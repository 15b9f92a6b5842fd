"""The routing rule in the domain: default routes, preferences, and printers' limits."""

from __future__ import annotations

import pytest

from mail_pipeline.domain.routing import (
    DEFAULT_ROUTES,
    PRINTER_COUNTRIES,
    NoRoute,
    choose_printer,
    printer_problem,
)


def test_the_default_table_is_the_seeds() -> None:
    assert dict(DEFAULT_ROUTES) == {"US": "lob", "GB": "stannp"}
    assert PRINTER_COUNTRIES["intelliprint"] == frozenset({"US"})


@pytest.mark.parametrize(
    ("country", "preference", "available", "printer"),
    [
        ("US", None, None, "lob"),
        ("us", None, None, "lob"),
        ("GB", None, None, "stannp"),
        ("US", "intelliprint", None, "intelliprint"),
        ("US", " IntelliPrint ", None, "intelliprint"),
        ("US", "intelliprint", {"lob"}, "lob"),  # preferred but not configured
        ("GB", "lob", None, "stannp"),  # lob does not serve GB
        ("US", "no-such-printer", None, "lob"),
    ],
)
def test_preference_then_route(
    country: str, preference: str | None, available: set[str] | None, printer: str
) -> None:
    assert choose_printer(country, preference, available=available) == printer


@pytest.mark.parametrize(("country", "says"), [("FR", "FR"), ("", "an unknown country")])
def test_a_country_without_a_route_is_refused(country: str, says: str) -> None:
    with pytest.raises(NoRoute, match=f"no printer mails to {says}"):
        choose_printer(country, "lob")


def test_lob_refuses_address_lines_over_50_characters() -> None:
    assert printer_problem("lob", "x" * 30, "y" * 20) is None
    assert printer_problem("lob", "x" * 30, "y" * 21) == (
        "address lines 1 and 2 are 51 characters together; Lob takes at most 50"
    )
    assert printer_problem("stannp", "x" * 300, None) is None

"""``MAIL_PIPELINE_RATE_LIMITS``: contract rate limits that replace the published ones."""

from __future__ import annotations

import pytest

from mail_pipeline.settings import (
    RATE_LIMITS_VAR,
    RateLimit,
    SettingsError,
    load_settings,
    parse_rate_limits,
    rate_limit_overrides,
)


def test_unset_or_empty_keeps_every_published_limit() -> None:
    assert rate_limit_overrides({}) == {}
    assert rate_limit_overrides({RATE_LIMITS_VAR: "  "}) == {}
    assert load_settings({}).rate_limits == {}


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ("lob=300/5", {"lob": RateLimit(300, 5.0)}),
        ("lob=off", {"lob": None}),
        (
            " Lob = 300 / 5 , stannp=OFF, klaviyo=10/0.5,",
            {"lob": RateLimit(300, 5.0), "stannp": None, "klaviyo": RateLimit(10, 0.5)},
        ),
        (
            "lob=off,stannp=off,intelliprint=off,cloudflare=off,klaviyo=off,stripe=off",
            dict.fromkeys(("lob", "stannp", "intelliprint", "cloudflare", "klaviyo", "stripe")),
        ),
    ],
)
def test_contract_limits_are_read(text: str, limits: dict[str, RateLimit | None]) -> None:
    assert parse_rate_limits(text) == limits
    assert load_settings({RATE_LIMITS_VAR: text}).rate_limits == limits


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("lob", "'lob' is not vendor=CALLS/SECONDS or vendor=off"),
        ("=150/5", "is not vendor=CALLS/SECONDS or vendor=off"),
        ("lob=", "is not vendor=CALLS/SECONDS or vendor=off"),
        ("fedex=10/1", "'fedex' is not a rate-limited vendor (one of: lob, stannp"),
        ("lob=150", "lob='150' is not CALLS/SECONDS or off"),
        ("lob=fast", "lob='fast' is not CALLS/SECONDS or off"),
        ("lob=0/5", "the calls ('0') must be a whole number of at least 1"),
        ("lob=1.5/5", "the calls ('1.5') must be a whole number of at least 1"),
        ("lob=-3/5", "the calls ('-3') must be a whole number"),
        ("lob=150/0", "the seconds ('0') must be a positive number"),
        ("lob=150/-5", "the seconds ('-5') must be a positive number"),
        ("lob=150/inf", "the seconds ('inf') must be a positive number"),
        ("lob=150/nan", "the seconds ('nan') must be a positive number"),
        ("lob=150/5/1", "the seconds ('5/1') must be a positive number"),
        ("lob=150/5,lob=off", "lob is given twice"),
    ],
)
def test_a_bad_override_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=f"^{RATE_LIMITS_VAR}: ") as refused:
        parse_rate_limits(text)
    assert reason in str(refused.value)
    with pytest.raises(SettingsError):
        load_settings({RATE_LIMITS_VAR: text})

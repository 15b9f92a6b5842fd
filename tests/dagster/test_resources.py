"""Resources build the right clients for their environment, without I/O until used."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from mail_pipeline.db.ratelimit import SharedRateLimiter, limit_key
from mail_pipeline.definitions import production_resources, sandbox_resources
from mail_pipeline.integrations.ratelimit import SlidingWindowLimiter
from mail_pipeline.limits import MAILING_RUNS_IN_FLIGHT
from mail_pipeline.resources.images import SandboxImageHost
from mail_pipeline.resources.printing import PUBLISHED_RATE_LIMITS, LivePrinters, SandboxPrinters
from mail_pipeline.settings import SettingsError, load_settings
from tests.environments import PRODUCTION


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), "white").save(buffer, "PNG")
    return buffer.getvalue()


def test_sandbox_proofs_are_links_a_person_can_open(tmp_path: Path) -> None:
    host = SandboxImageHost(
        sandbox_path=str(tmp_path / "s.sqlite"),
        image_dir=str(tmp_path / "images"),
        public_base_url="http://localhost:3001",
    )
    hosted = host.client().upload("proofs/c1/r1/abc/front.png", _png(), {})
    assert hosted.url == "http://localhost:3001/sandbox-hash/proofs/c1/r1/abc/front.png"
    assert (tmp_path / "images" / "sandbox-hash" / "proofs/c1/r1/abc/front.png").exists()

    plain = SandboxImageHost(
        sandbox_path=str(tmp_path / "s.sqlite"), image_dir=str(tmp_path / "images")
    )
    assert plain.client().upload("proofs/c1/r2/abc/front.png", _png(), {}).url.startswith("file://")


def test_local_settings_bind_the_image_server_url(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "MAIL_PIPELINE_DATA_DIR": str(tmp_path),
            "MAIL_PIPELINE_IMAGE_BASE_URL": "http://localhost:3001",
        }
    )
    assert sandbox_resources(settings)["image_host"].public_base_url == "http://localhost:3001"
    assert not tmp_path.joinpath("images").exists()


def test_production_binds_no_sandbox() -> None:
    resources = production_resources(load_settings(PRODUCTION))
    names = {type(r).__name__ for r in resources.values()}
    assert not any("Sandbox" in name for name in names), names
    assert "LivePrinters" in names and "SqsQueues" in names
    cdp = resources["cdp"]
    assert (cdp.secrets, cdp.deployment) == ("secrets-manager", "production")
    assert resources["database"].environment == "production"


def test_production_binds_secrets_by_name_not_value() -> None:
    resources = production_resources(load_settings(PRODUCTION))
    printers = resources["printers"]
    assert printers.lob_api_key == dg.EnvVar("LOB_API_KEY")
    assert printers.lob_webhook_secret == dg.EnvVar("LOB_WEBHOOK_SECRET")
    assert printers.intelliprint_api_key is None  # not configured: not routable
    assert resources["billing"].api_key == dg.EnvVar("STRIPE_API_KEY")


@pytest.mark.parametrize("printer", ["lob", "stannp", "intelliprint"])
def test_live_printers_refuse_a_key_without_its_webhook_secret(printer: str) -> None:
    """The clients skip signature checks without a secret: a forged, unsigned "delivered"
    webhook would be believed. Production never builds such a printer."""
    printers = LivePrinters(**{f"{printer}_api_key": "key"})
    with pytest.raises(ValueError, match=f"no webhook secret: {printer}"):
        printers.printers()
    signed = LivePrinters(**{f"{printer}_api_key": "key", f"{printer}_webhook_secret": "s"})
    assert signed.printers()[printer].webhook_secret == "s"


def test_printers_share_each_rate_limit_on_the_app_database(tmp_path: Path, db_url: str) -> None:
    """With the app database bound, every run's client takes its calls from one schedule per
    API key at 95% of the published limit - not a fixed share per run in flight."""
    printers = SandboxPrinters(
        sandbox_path=str(tmp_path / "s.sqlite"),
        database_url=db_url,
        database_environment="test",
        rate_limits="",
    )
    built = printers.printers()
    for name, (calls, seconds) in PUBLISHED_RATE_LIMITS.items():
        limiter = built[name].limiter
        assert isinstance(limiter, SharedRateLimiter)
        assert limiter.key.startswith(f"{name}:")
        assert limiter.interval == pytest.approx(seconds / (calls * 0.95))


def test_a_shared_limit_key_names_the_vendor_not_the_api_key(db_url: str) -> None:
    printers = LivePrinters(
        lob_api_key="live_secret_key_123",
        lob_webhook_secret="s",
        database_url=db_url,
        database_environment="test",
        rate_limits="",
    )
    limiter = printers.printers()["lob"].limiter
    assert isinstance(limiter, SharedRateLimiter)
    assert limiter.key == limit_key("lob", "live_secret_key_123")
    assert "secret" not in limiter.key


def test_contract_limits_replace_the_published_ones(tmp_path: Path, db_url: str) -> None:
    printers = SandboxPrinters(
        sandbox_path=str(tmp_path / "s.sqlite"),
        database_url=db_url,
        database_environment="test",
        rate_limits="lob=300/5,stannp=off",
    )
    built = printers.printers()
    lob, intelliprint = built["lob"].limiter, built["intelliprint"].limiter
    assert isinstance(lob, SharedRateLimiter) and isinstance(intelliprint, SharedRateLimiter)
    assert lob.interval == pytest.approx(5 / (300 * 0.95))
    assert built["stannp"].limiter is None
    assert intelliprint.interval == pytest.approx(60 / (100 * 0.95))


def test_a_bad_contract_limit_is_refused_with_the_reason(tmp_path: Path) -> None:
    printers = SandboxPrinters(sandbox_path=str(tmp_path / "s.sqlite"), rate_limits="lob=fast")
    with pytest.raises(SettingsError, match="lob='fast' is not CALLS/SECONDS or off"):
        printers.printers()


def test_printers_without_a_database_keep_a_fixed_share(tmp_path: Path) -> None:
    """Built by hand, without the shared schedule: each process keeps to its share of 95% of
    Lob's 150 requests per 5 s, as if MAILING_RUNS_IN_FLIGHT runs were in flight."""
    printers = SandboxPrinters(sandbox_path=str(tmp_path / "s.sqlite"), rate_limits="")
    lob = printers.printers()["lob"].limiter
    assert isinstance(lob, SlidingWindowLimiter)
    assert lob.capacity == int(150 * 0.95 / MAILING_RUNS_IN_FLIGHT)

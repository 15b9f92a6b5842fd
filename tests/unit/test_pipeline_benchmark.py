"""The end-to-end benchmark's own arithmetic (``benchmarks/pipeline.py``): shares of a rate
limit, the seed's pacing and throughput, so the table it records can be trusted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_pipeline", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_sliding_window_counts_calls_less_than_its_length_apart(bench: ModuleType) -> None:
    window = bench.Window(3, 1.0)

    assert bench.peak_in_window([0.0, 0.5, 0.99, 1.0, 1.5], window) == 3
    assert bench.peak_in_window([0.0, 1.0, 2.0], window) == 1
    assert bench.peak_in_window([], window) == 0


def test_fixed_windows_are_aligned_on_their_length(bench: ModuleType) -> None:
    """Klaviyo's: 4 calls across a boundary are 2 + 2, though a sliding second holds 4."""
    calls = [10.6, 10.8, 11.1, 11.3]

    assert bench.peak_in_window(calls, bench.Window(3, 1.0, fixed=True)) == 2
    assert bench.peak_in_window(calls, bench.Window(3, 1.0)) == 4


def test_vendor_shares_are_per_credential_and_of_the_binding_window(bench: ModuleType) -> None:
    # Two bursts of 150, 5 s apart (1/1024 s apart within a burst: exact in binary).
    lob_calls = [5.0 * burst + i / 1024 for burst in range(2) for i in range(150)]
    stats = {
        "vendors": {
            "lob": {
                "requests": 302,
                "statuses": {"200": 300, "429": 2},
                "rate_limited": 2,
                "credentials": 1,
                "accepted_at": {"k1": lob_calls},
            },
            "cloudflare": {  # two batch tokens at 128/s each, of 200/s per token
                "requests": 512,
                "statuses": {"200": 512},
                "rate_limited": 0,
                "credentials": 2,
                "accepted_at": {t: [i / 128 for i in range(256)] for t in ("a", "b")},
            },
            "renderer": {
                "requests": 1,
                "statuses": {"200": 1},
                "rate_limited": 0,
                "accepted_at": {"": [1.0]},
            },
        }
    }

    figures = {v.vendor: v for v in bench.vendor_figures(stats)}

    lob = figures["lob"]
    assert lob.peak_share == pytest.approx(1.0)
    assert lob.mean_share == pytest.approx(300 / (150 * (1 + lob.busy_seconds / 5)))
    assert lob.mean_share > 0.95, "both windows were full"
    assert lob.rate_limited == 2
    assert figures["cloudflare"].peak_share == pytest.approx(128 / 200)
    assert figures["cloudflare"].credentials == 2
    assert figures["renderer"].peak_share is None, "no published limit"
    assert bench.binding_vendor(list(figures.values())).vendor == "lob"


def test_the_sustained_share_leaves_out_the_ramps(bench: ModuleType) -> None:
    lob = bench.Window(150, 5.0)
    # A slow start (10 calls over 10 s), then a steady 28.5 per second, then a slow tail.
    steady = [10.0 + i / 28.5 for i in range(1000)]
    times = [float(i) for i in range(10)] + steady + [steady[-1] + 1 + i for i in range(10)]
    assert bench.sustained_share(times, lob) == pytest.approx(0.95, abs=0.001)
    # A stream at the full limit with one 2 s gap in the middle loses that share.
    gapped = [i / 30 for i in range(600)] + [22.0 + i / 30 for i in range(600)]
    assert bench.sustained_share(gapped, lob) < 0.95
    assert bench.sustained_share([1.0, 2.0], lob) is None, "too few calls to tell"


def test_the_seeds_pacing_is_50_per_15_seconds(bench: ModuleType) -> None:
    latency = bench.parse_latency(bench.LATENCY)

    sent = sorted(bench.seed_sent_times([0.0] * 1000, latency))

    assert bench.throughput(sent) == pytest.approx(50 / 15, rel=0.05)


def test_a_lone_recipient_waits_for_the_seeds_ticks(bench: ModuleType) -> None:
    """Staged at the next 15 s tick, worked at the next 7 s tick, twice, plus the calls."""
    latency = {"renderer": 0.2, "cloudflare": 0.1, "lob": 0.3, "stripe": 0.05, "klaviyo": 0.05}

    (sent,) = bench.seed_sent_times([1.0], latency)

    proofed = 21 + 0.4  # staged at 15, dispatched at 21
    assert sent == pytest.approx(35 + 0.6)  # staged at 30 (after 21.4), dispatched at 35
    assert proofed < sent


def test_throughput_is_measured_between_10_and_90_percent(bench: ModuleType) -> None:
    assert bench.throughput([float(i) for i in range(101)]) == pytest.approx(1.0)
    assert bench.throughput([5.0]) == 0.0

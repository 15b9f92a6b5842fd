"""The crash-injection command's referee (``benchmarks/chaos.py``): a duplicate, a lost
profile, a stuck recipient or a reasonless Error must each make a trial unclean, and the
plan must cover every fault."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    sys.path.insert(0, str(PATH.parent))
    try:
        spec = importlib.util.spec_from_file_location("benchmark_chaos", PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PATH.parent))
    return module


def _ledgers(chaos: ModuleType, pieces=(), meters=(), cdp=()):  # type: ignore[no-untyped-def]
    return chaos.Ledgers(Counter(pieces), Counter(meters), Counter(cdp), 0)


def _problems(verdict: dict[str, int], chaos: ModuleType) -> dict[str, int]:
    return {k: verdict[k] for k in chaos.PROBLEMS if verdict[k]}


def test_a_mailed_recipient_with_one_of_each_is_clean(chaos: ModuleType) -> None:
    rows = [(1, "Sent", None, "P1"), (2, "Received", None, ""), (3, "Error", "bad zip", "")]
    ledgers = _ledgers(chaos, pieces=[1, 2], meters=[1, 2], cdp=[1, 2])

    verdict = chaos.judge(rows, ["P1"], ledgers)

    assert _problems(verdict, chaos) == {}
    assert verdict["statuses"] == {"Sent": 1, "Received": 1, "Error": 1}


@pytest.mark.parametrize(
    ("rows", "profiles", "pieces", "meters", "cdp", "problem"),
    [
        ([(1, "Sent", None, "")], [], [1, 1], [1], [1], "two_pieces"),
        ([(1, "Sent", None, "")], [], [], [1], [1], "no_piece"),
        ([(1, "Sent", None, "")], [], [1], [1, 1], [1], "two_meter_events"),
        ([(1, "Sent", None, "")], [], [1], [], [1], "no_meter_event"),
        ([(1, "Sent", None, "")], [], [1], [1], [1, 1], "two_cdp_events"),
        ([(1, "Sent", None, "")], [], [1], [1], [], "no_cdp_event"),
        ([(1, "Error", None, "")], [], [], [], [], "error_without_reason"),
        ([(1, "Error", "  ", "")], [], [], [], [], "error_without_reason"),
        ([(1, "Error", "refused", "")], [], [1], [], [], "piece_not_mailed"),
        ([(1, "Sending", None, "")], [], [], [], [], "stuck"),
        ([(1, "Pending", None, "P1")], ["P1"], [], [], [], "stuck"),
        ([], ["P1"], [], [], [], "lost_profiles"),
        (
            [(1, "Holdout", None, "P1"), (2, "Holdout", None, "P1")],
            ["P1"],
            [],
            [],
            [],
            "duplicate_recipients",
        ),
    ],
)
def test_each_kind_of_damage_makes_the_verdict_unclean(  # type: ignore[no-untyped-def]
    chaos: ModuleType, rows, profiles, pieces, meters, cdp, problem
) -> None:
    verdict = chaos.judge(rows, profiles, _ledgers(chaos, pieces, meters, cdp))

    assert _problems(verdict, chaos) == {problem: 1}


def test_a_trial_is_clean_only_with_a_verdict_without_problems_and_its_fault_injected(
    chaos: ModuleType,
) -> None:
    trial = chaos.Trial(1, "kill daemon", 1, 1, [], started=0.0)
    assert not trial.clean, "not judged yet"
    trial.verdict = chaos.judge([(1, "Sent", None, "")], [], _ledgers(chaos, [1], [1], [1]))
    assert trial.clean
    trial.given_up = True
    assert not trial.clean, "a fault that was never injected proves nothing"


def test_the_plan_covers_every_fault_evenly(chaos: ModuleType) -> None:
    plan = chaos.plan(100, random.Random(1))
    counts = Counter(plan)

    assert set(counts) == set(chaos.ALL_FAULTS)
    assert len(chaos.ALL_FAULTS) == 15
    assert min(counts.values()) >= 100 // 15
    assert max(counts.values()) <= 100 // 15 + 1
    assert chaos.plan(4, random.Random(1), ["kill daemon"]) == ["kill daemon"] * 4

"""A queue's run repeats its passes while messages come, and waits a while for more."""

from __future__ import annotations

from dataclasses import dataclass

from mail_pipeline.services.draining import repeat_passes


@dataclass(frozen=True)
class Pass:
    received: int = 0
    applied: int = 0
    dead_lettered: tuple[str, ...] = ()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _passes(*received: int):  # type: ignore[no-untyped-def]
    queue = list(received)

    def one_pass() -> Pass:
        n = queue.pop(0) if queue else 0
        return Pass(received=n, applied=n, dead_lettered=("m",) if n == 3 else ())

    return one_pass


def test_without_idling_a_run_ends_at_the_first_empty_pass() -> None:
    clock = Clock()
    total = repeat_passes(_passes(10, 3, 0, 7), idle_seconds=0, clock=clock, sleep=clock.sleep)

    assert total == Pass(received=13, applied=13, dead_lettered=("m",))
    assert clock.slept == []


def test_a_run_waits_for_more_messages_and_adds_every_pass_up() -> None:
    clock = Clock()
    # empty for 2 s, then 5 more, then empty for good
    total = repeat_passes(_passes(10, 0, 0, 5), idle_seconds=4, clock=clock, sleep=clock.sleep)

    assert total.received == 15 and total.applied == 15
    # two empty passes (a second apart) before the 5 came, then 4 s of empty passes
    assert clock.slept == [1.0] * 6


def test_a_run_ends_when_its_budget_is_spent_even_while_messages_come() -> None:
    clock = Clock()

    def busy() -> Pass:
        clock.now += 50
        return Pass(received=10)

    total = repeat_passes(busy, idle_seconds=20, budget_seconds=120, clock=clock, sleep=clock.sleep)

    assert total.received == 30  # passes started at 0, 50 and 100 s

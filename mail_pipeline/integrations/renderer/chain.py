"""Renderers and the fallback chain that picks one.

Three :class:`Renderer` implementations draw a proof: the internal rendering gateway
(:mod:`.gateway`), legacy Pixelixe (:mod:`.pixelixe`) and the local backup generator
(:mod:`.backup`). Which are used, in which order, is configuration
(:func:`build_fallback_order`); :class:`FallbackRenderer` tries them in that order.

- A vendor failure (:class:`~mail_pipeline.integrations.errors.IntegrationError`: 5xx, timeout,
  429 after retries, a refused request, an unusable image) moves on to the next renderer.
- :class:`~.models.InvalidProofRequest` (and its :class:`~.models.InvalidDesign`) is the
  caller's fault: no renderer can draw it, so it is raised at once.
- A renderer that keeps failing is skipped for a cool-down (a small circuit breaker), so a dead
  gateway costs one retry budget per cool-down rather than per recipient. The last renderer in
  the order is never skipped. A renderer whose vendor circuit is open
  (:class:`~mail_pipeline.integrations.circuit.CircuitOpen`) was not called either, and its
  failure is reported as skipped; when every renderer was skipped, the error's ``not_called``
  says the recipient's proof was never attempted.

Rendering has no side effects, so falling back after a lost response is always safe.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mail_pipeline.integrations.circuit import CircuitOpen
from mail_pipeline.integrations.errors import IntegrationError
from mail_pipeline.integrations.renderer.models import ProofRequest, RenderedProof

log = logging.getLogger(__name__)


class Renderer(ABC):
    """Draws a proof. ``render`` is pure: calling it twice is harmless."""

    name: str

    @abstractmethod
    def render(self, request: ProofRequest) -> RenderedProof: ...


class UnknownRenderer(ValueError):
    """The configured fallback order names a renderer that does not exist."""


def build_fallback_order(names: Sequence[str], available: Mapping[str, Renderer]) -> list[Renderer]:
    """The renderers named in ``names``, in that order; a readable error for bad config."""
    if isinstance(names, str):
        raise UnknownRenderer("the fallback order must be a list of renderer names, not a string")
    cleaned = [name.strip().lower() for name in names]
    if not cleaned:
        raise UnknownRenderer("the renderer fallback order is empty; name at least one renderer")
    unknown = [name for name in cleaned if name not in available]
    if unknown:
        raise UnknownRenderer(
            f"unknown renderer(s) {', '.join(map(repr, unknown))} in the fallback order; "
            f"known renderers: {', '.join(sorted(available))}"
        )
    repeated = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if repeated:
        raise UnknownRenderer(f"renderer(s) {', '.join(repeated)} appear twice in the order")
    return [available[name] for name in cleaned]


@dataclass(frozen=True)
class RenderFailure:
    renderer: str
    reason: str
    retryable: bool
    skipped: bool = False


@dataclass(frozen=True)
class RenderOutcome:
    """The proof, and the renderers that failed (or were skipped) before one succeeded."""

    proof: RenderedProof
    failures: tuple[RenderFailure, ...]


class AllRenderersFailed(IntegrationError):
    """Every renderer in the order failed. Retryable when any of the failures was."""

    def __init__(self, failures: Sequence[RenderFailure]) -> None:
        self.failures = tuple(failures)
        self.retryable = any(f.retryable for f in self.failures)
        #: No renderer was called (each skipped, or its vendor's circuit open).
        self.not_called = bool(self.failures) and all(f.skipped for f in self.failures)
        detail = "; ".join(f"{f.renderer}: {f.reason}" for f in self.failures)
        super().__init__("renderer", f"every renderer failed ({detail})")


class _Breaker:
    def __init__(self) -> None:
        self.failures = 0
        self.open_until = 0.0


class FallbackRenderer(Renderer):
    """Tries ``renderers`` in order; the proof's ``renderer`` says which one drew it."""

    name = "fallback"

    def __init__(
        self,
        renderers: Sequence[Renderer],
        *,
        open_after: int = 3,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not renderers:
            raise UnknownRenderer("a fallback chain needs at least one renderer")
        self.renderers = tuple(renderers)
        self.open_after = open_after
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers = {r.name: _Breaker() for r in self.renderers}

    def render(self, request: ProofRequest) -> RenderedProof:
        return self.render_with_report(request).proof

    def render_with_report(self, request: ProofRequest) -> RenderOutcome:
        failures: list[RenderFailure] = []
        last = len(self.renderers) - 1
        for index, renderer in enumerate(self.renderers):
            if index < last and self._is_open(renderer.name):
                failures.append(
                    RenderFailure(
                        renderer.name, "skipped: failing recently", retryable=True, skipped=True
                    )
                )
                continue
            try:
                proof = renderer.render(request)
            except IntegrationError as exc:
                self._record(renderer.name, ok=False)
                log.warning(
                    "renderer %s failed for recipient %s, falling back: %s",
                    renderer.name,
                    request.recipient_id,
                    exc,
                )
                failures.append(
                    RenderFailure(
                        renderer.name,
                        str(exc),
                        exc.retryable,
                        skipped=isinstance(exc, CircuitOpen),
                    )
                )
                continue
            self._record(renderer.name, ok=True)
            return RenderOutcome(proof, tuple(failures))
        raise AllRenderersFailed(failures)

    def _is_open(self, name: str) -> bool:
        with self._lock:
            return self._breakers[name].open_until > self._clock()

    def _record(self, name: str, *, ok: bool) -> None:
        with self._lock:
            breaker = self._breakers[name]
            if ok:
                breaker.failures = 0
                breaker.open_until = 0.0
                return
            breaker.failures += 1
            if breaker.failures >= self.open_after:
                breaker.open_until = self._clock() + self.cooldown_seconds

"""Is exactly one ``dagster-daemon`` alive for the instance? Judged from its heartbeats.

How Dagster 1.13 records heartbeats (``dagster/_daemon/daemon.py``, ``controller.py`` and
``SqlRunStorage.add_daemon_heartbeat``): a daemon process has one id (a uuid4 of its
controller) shared by all its daemon threads - SENSOR, SCHEDULER, QUEUED_RUN_COORDINATOR,
BACKFILL, ASSET, FRESHNESS_DAEMON, MONITORING... Each thread writes a heartbeat (timestamp,
type, id) when it starts and then at most every 30 seconds, whenever its loop yields, into
``daemon_heartbeats``, which keeps **one row per type**: each write replaces the previous one,
whoever wrote it. One read therefore shows the last writer of each type and cannot tell two
daemons apart. Two daemons show over time, as a type's row changes hands back and forth.

So :func:`watch` reads the heartbeats every ``poll`` seconds for ``window`` seconds (a little
over two heartbeat intervals) and keeps each new write it sees - a row whose timestamp changed
since the previous read - in the order seen. The rows as first read are not writes: they may
be hours old. Then (:func:`judge`):

- no write seen: no daemon is alive (a live one writes every type at least once per interval);
- two daemon ids whose writes interleave - A seen, then B, then A again: several daemons run;
- two ids one after the other (every write of A seen before the first of B): one daemon that
  was restarted during the watch; the later one is alive.

Dagster's own ``dagster-daemon liveness-check`` only asks whether every required type has a
heartbeat younger than 30 s + ``DAGSTER_DAEMON_HEARTBEAT_TOLERANCE`` (default 1800 s): it
sees neither a second daemon nor which one wrote. A running second daemon also logs "Another
SENSOR daemon is still sending heartbeats" (``DagsterDaemon._check_add_heartbeat``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

#: Dagster's ``DEFAULT_HEARTBEAT_INTERVAL_SECONDS``: how often each daemon type writes.
HEARTBEAT_INTERVAL = 30.0
#: How long :func:`watch` watches by default: a little over two heartbeat intervals.
WINDOW = 2 * HEARTBEAT_INTERVAL + 5
#: A required type whose last heartbeat is older than this is named in the report.
STALE_AFTER = 300.0
UNKNOWN_ID = "(no id)"


class Heartbeat(Protocol):
    """A Dagster ``DaemonHeartbeat``, as far as this module reads it."""

    @property
    def timestamp(self) -> float: ...

    @property
    def daemon_type(self) -> str: ...

    @property
    def daemon_id(self) -> str | None: ...


class Verdict(Enum):
    ONE_ALIVE = "one daemon alive"
    NONE_ALIVE = "no daemon alive"
    SEVERAL_ALIVE = "several daemons alive"


#: ``mail-pipeline daemon-check``'s exit status for each verdict.
EXIT_STATUS = {Verdict.ONE_ALIVE: 0, Verdict.NONE_ALIVE: 1, Verdict.SEVERAL_ALIVE: 3}


@dataclass(frozen=True)
class Write:
    """A heartbeat seen to change during the watch: ``seen`` is the read that saw it."""

    seen: int
    daemon_type: str
    daemon_id: str
    timestamp: float


@dataclass(frozen=True)
class LastHeartbeat:
    daemon_type: str
    daemon_id: str
    age: float


@dataclass(frozen=True)
class DaemonReport:
    verdict: Verdict
    window: float
    writes: tuple[Write, ...]
    #: Ids that wrote during the watch, the latest writer last (several alive: those that
    #: run together, by id).
    writers: tuple[str, ...]
    #: Pairs of ids whose writes interleaved, with the types where they did.
    overlaps: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    #: The last heartbeat of each type at the end of the watch.
    last: tuple[LastHeartbeat, ...] = ()
    #: Required types with no heartbeat at all, or one older than ``STALE_AFTER``.
    quiet_types: tuple[str, ...] = ()

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.verdict]

    def lines(self) -> list[str]:
        seconds = f"{self.window:g} s"
        if self.verdict is Verdict.NONE_ALIVE:
            lines = [f"no dagster-daemon is alive: no heartbeat was written in {seconds}"]
            if self.last:
                newest = min(self.last, key=lambda h: h.age)
                lines.append(
                    f"the last one: {newest.daemon_type} by daemon {newest.daemon_id}, "
                    f"{_age(newest.age)} ago"
                )
            else:
                lines.append("this instance has no daemon heartbeat at all")
            return lines
        if self.verdict is Verdict.SEVERAL_ALIVE:
            lines = [
                f"{len(self.writers)} dagster-daemons are alive for this instance: "
                f"{', '.join(self.writers)} wrote heartbeats in turn in {seconds}"
            ]
            for (first, second), types in self.overlaps.items():
                lines.append(f"  {first} and {second}, both writing {', '.join(types)}")
            lines.append(
                "only one may run: stop every daemon not started by `mail-pipeline daemon` "
                "(its log says 'Another ... daemon is still sending heartbeats')"
            )
            return lines
        alive = self.writers[-1]
        written = sorted({w.daemon_type for w in self.writes if w.daemon_id == alive})
        count = sum(1 for w in self.writes if w.daemon_id == alive)
        lines = [
            f"one dagster-daemon is alive: {alive} wrote {count} heartbeats in {seconds} "
            f"({', '.join(written)})"
        ]
        if len(self.writers) > 1:
            lines.append(
                f"  it replaced {', '.join(self.writers[:-1])} during the check (a restart)"
            )
        if self.quiet_types:
            lines.append(
                f"  warning: no recent heartbeat for {', '.join(self.quiet_types)} "
                f"(none in {_age(STALE_AFTER)}); the daemon's log says why"
            )
        return lines


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _id(heartbeat: Heartbeat) -> str:
    return heartbeat.daemon_id or UNKNOWN_ID


def judge(
    writes: Sequence[Write],
    window: float,
    *,
    last: Iterable[LastHeartbeat] = (),
    required_types: Iterable[str] = (),
) -> DaemonReport:
    """The verdict on the writes seen during one watch (see the module's docstring)."""
    last = tuple(last)
    ages = {h.daemon_type: h.age for h in last}
    quiet = tuple(t for t in required_types if ages.get(t, STALE_AFTER + 1) > STALE_AFTER)
    first_seen: dict[str, int] = {}
    last_seen: dict[str, int] = {}
    for write in writes:
        first_seen.setdefault(write.daemon_id, write.seen)
        last_seen[write.daemon_id] = write.seen
    writers = tuple(sorted(last_seen, key=lambda i: (last_seen[i], first_seen[i])))
    overlaps: dict[tuple[str, str], tuple[str, ...]] = {}
    for n, a in enumerate(writers):
        for b in writers[n + 1 :]:
            if first_seen[a] < last_seen[b] and first_seen[b] < last_seen[a]:
                shared = {w.daemon_type for w in writes if w.daemon_id == a} & {
                    w.daemon_type for w in writes if w.daemon_id == b
                }
                first, second = sorted((a, b))
                overlaps[(first, second)] = tuple(sorted(shared))
    if not writers:
        verdict = Verdict.NONE_ALIVE
    elif overlaps:
        verdict = Verdict.SEVERAL_ALIVE
        writers = tuple(sorted({i for pair in overlaps for i in pair}))
    else:
        verdict = Verdict.ONE_ALIVE
    return DaemonReport(verdict, window, tuple(writes), writers, overlaps, last, quiet)


def watch(
    read: Callable[[], Mapping[str, Heartbeat]],
    *,
    required_types: Iterable[str] = (),
    window: float = WINDOW,
    poll: float = 1.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> DaemonReport:
    """Read the heartbeats (``read``: ``DagsterInstance.get_daemon_heartbeats``) every
    ``poll`` seconds for ``window`` seconds and judge what was seen."""
    start = clock()
    previous = {t: (_id(h), h.timestamp) for t, h in read().items()}
    writes: list[Write] = []
    seen = 0
    current: Mapping[str, Heartbeat] = {}
    while True:
        sleep(poll)
        seen += 1
        current = read()
        for daemon_type, heartbeat in current.items():
            mark = (_id(heartbeat), heartbeat.timestamp)
            if previous.get(daemon_type) != mark:
                writes.append(Write(seen, daemon_type, mark[0], heartbeat.timestamp))
                previous[daemon_type] = mark
        if clock() - start >= window:
            break
    now = clock()
    last = [
        LastHeartbeat(t, _id(h), max(0.0, now - h.timestamp)) for t, h in sorted(current.items())
    ]
    return judge(writes, window, last=last, required_types=required_types)

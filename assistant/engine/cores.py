"""How many threads the model may use now: the cores that other processes leave idle.

An OpenMP parallel region ends when its slowest thread does. With one of two cores busy in another process (a
training run here; `cargo build` or rust-analyzer on a user's machine) a two-thread model waited on the busy core in
every op: a new cursor took 2.7 s and the whole repository 70 s, against 0.17 s and 27 s with one thread
(BENCHMARKS.md, "A busy core"). So before each piece of model work the model thread asks how many cores other
processes kept busy since it last looked (the machine's busy time in /proc/stat less this process's own CPU time)
and uses the rest, never more than it started with, never fewer than one.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)   # user, nice, system, irq, softirq, steal (not idle, iowait; guest is in user)
EVERY_S = 0.5                      # the shortest span a busy share is measured over
SPARE = 0.2                        # a core counts as idle when at most this share of it is busy elsewhere


def machine_busy() -> tuple[float, int] | None:
    """(CPU seconds all cores spent busy since boot, the number of cores) from /proc/stat; None where it is not
    there (macOS, Windows) or unreadable."""
    try:
        lines = STAT.read_text().splitlines()
        ticks = os.sysconf("SC_CLK_TCK")
        total = [int(x) for x in lines[0].split()[1:]]
        cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        return sum(total[i] for i in BUSY_FIELDS if i < len(total)) / ticks, cores
    except (OSError, ValueError, IndexError):
        return None


class IdleCores:
    """The threads to use: `most` (PyTorch's own count at the start) less the cores other processes kept busy over
    the last span of at least `every` seconds; `most` until two readings exist, or where the machine cannot say."""

    def __init__(self, most: int, read: Callable[[], tuple[float, int] | None] = machine_busy,
                 own: Callable[[], float] = time.process_time, clock: Callable[[], float] = time.monotonic,
                 every: float = EVERY_S) -> None:
        self.most, self.read, self.own, self.clock, self.every = max(1, most), read, own, clock, every
        self.current = self.most
        self._last: tuple[float, float, float] | None = None    # (clock, machine busy seconds, own CPU seconds)

    def threads(self) -> int:
        now = self.clock()
        if self._last is not None and now - self._last[0] < self.every:
            return self.current
        reading = self.read()
        if reading is None:
            return self.current
        (busy, cores), own = reading, self.own()
        if self._last is not None:
            span = now - self._last[0]
            elsewhere = max(0.0, (busy - self._last[1]) - (own - self._last[2])) / span
            self.current = max(1, min(self.most, int(cores - elsewhere + SPARE)))
        self._last = (now, busy, own)
        return self.current

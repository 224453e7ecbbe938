"""Per-stage wall-clock timing for the pipeline, printed as a table with ``--timings``.

On CUDA a stage's time is taken between two CUDA events recorded on the current stream around the stage,
with a synchronisation at the end of the stage (so the numbers are the device's, not the launch queue's).
A host-only stage leaves the stream idle, so its second event fires when it is recorded: the elapsed time
is then the stage's wall time. On CPU it is ``time.perf_counter``. Compile/warm-up cost is the first
call's cost: on a cold process it is part of that stage's time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StageTiming:
    name: str
    seconds: float
    note: str = ""


@dataclass
class StageTimer:
    """Collects one ``StageTiming`` per stage run. ``device`` is "cpu" or "cuda"."""

    device: str = "cpu"
    timings: list[StageTiming] = field(default_factory=list)

    def measure(self, name: str) -> _Measure:
        return _Measure(self, name)

    def total(self) -> float:
        return sum(t.seconds for t in self.timings)

    def table(self, title: str = "stage timings") -> str:
        """A plain-text table: stage, seconds, share of the total, note."""
        total = self.total()
        width = max([len(t.name) for t in self.timings] + [len("total")])
        lines = [f"{title} ({self.device})", f"{'stage':<{width}}  {'seconds':>9}  {'share':>6}  note"]
        for t in self.timings:
            share = 100.0 * t.seconds / total if total > 0 else 0.0
            lines.append(f"{t.name:<{width}}  {t.seconds:9.3f}  {share:5.1f}%  {t.note}")
        lines.append(f"{'total':<{width}}  {total:9.3f}  100.0%  sum of stages (run serially)")
        return "\n".join(lines)


class _Measure:
    def __init__(self, timer: StageTimer, name: str) -> None:
        self.timer, self.name, self.note = timer, name, ""
        self._events = None

    def __enter__(self) -> _Measure:
        if self.timer.device == "cuda":
            import torch

            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        if self._events is not None:
            self._events[1].record()
            self._events[1].synchronize()
            seconds = self._events[0].elapsed_time(self._events[1]) / 1000.0
        else:
            seconds = time.perf_counter() - self._t0
        self.timer.timings.append(StageTiming(self.name, seconds, self.note))

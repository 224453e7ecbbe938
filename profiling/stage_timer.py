"""Per-stage timing for the pipeline, printed as a table with ``--timings``.

On CUDA a stage's time is taken between two CUDA events recorded on the stream the stage runs on (its
scheduler lane's), with a synchronisation at the end of the stage (so the numbers are the device's, not the
launch queue's). A host-only stage leaves the stream idle, so its second event fires when it is recorded:
the elapsed time is then the stage's wall time. On CPU it is ``time.perf_counter``. Compile/warm-up cost is
the first call's cost: on a cold process it is part of that stage's time.

Every timing also keeps its wall-clock start and end (``perf_counter``), so a request whose stages overlap
(``engine.runtime.scheduler``) reports its critical path -- the wall time from the first stage's start to
the last stage's end -- beside the sum of its stages. Stages of one request may finish on several threads;
appending a timing is thread-safe.

Sub-steps: ``substep("name")`` inside a stage marks a part of it. Off by default it costs a thread-local
read; with ``StageTimer(substeps=True)`` each part is timed with a device synchronisation at both ends and
listed in the stage's ``substeps`` (and after its note in the table). The synchronisations serialise the
device work, so a profiled request is a serial profile, not a latency figure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_ACTIVE = threading.local()  # the _Measure running on this thread (sub-steps attach to it)


@dataclass
class StageTiming:
    name: str
    seconds: float
    note: str = ""
    start: float = 0.0  # perf_counter at the stage's start
    end: float = 0.0  # perf_counter at the stage's end (after its device work finished)
    lane: str = ""  # scheduler lane that ran it
    substeps: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds), substeps=True only


@dataclass
class StageTimer:
    """Collects one ``StageTiming`` per stage run. ``device`` is "cpu" or "cuda"."""

    device: str = "cpu"
    substeps: bool = False  # time the substep() parts of each stage (synchronising; see module docstring)
    timings: list[StageTiming] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the stages dropped or changed, for the user
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def warn(self, messages) -> None:
        with self._lock:
            self.warnings.extend(str(m) for m in messages)

    def measure(self, name: str, lane: str = "") -> _Measure:
        return _Measure(self, name, lane)

    def add(self, timing: StageTiming) -> None:
        with self._lock:
            self.timings.append(timing)

    def total(self) -> float:
        """Sum of the stages' times (what a serial run would take)."""
        return sum(t.seconds for t in self.timings)

    def wall(self) -> float:
        """Critical path: first stage start to last stage end (overlapped stages counted once)."""
        if not self.timings:
            return 0.0
        return max(t.end for t in self.timings) - min(t.start for t in self.timings)

    def table(self, title: str = "stage timings") -> str:
        """A plain-text table: stage, seconds, share of the sum, lane, note; then sum and critical path."""
        total = self.total()
        width = max([len(t.name) for t in self.timings] + [len("critical path (wall)")])
        lines = [f"{title} ({self.device})",
                 f"{'stage':<{width}}  {'seconds':>9}  {'share':>6}  {'lane':<8}  note"]
        for t in sorted(self.timings, key=lambda t: t.start):
            share = 100.0 * t.seconds / total if total > 0 else 0.0
            lines.append(f"{t.name:<{width}}  {t.seconds:9.3f}  {share:5.1f}%  {t.lane:<8}  {t.note}")
            lines += [f"{'  . ' + n:<{width}}  {s:9.3f}" for n, s in t.substeps]
        lines.append(f"{'sum of stages':<{width}}  {total:9.3f}  100.0%")
        lines.append(f"{'critical path (wall)':<{width}}  {self.wall():9.3f}  "
                     f"{100.0 * self.wall() / total if total > 0 else 0.0:5.1f}%  stages overlapped "
                     f"where the graph allows")
        return "\n".join(lines)


class _Measure:
    def __init__(self, timer: StageTimer, name: str, lane: str) -> None:
        self.timer, self.name, self.lane, self.note = timer, name, lane, ""
        self._events = None
        self.timing: StageTiming | None = None
        self.substeps: list[tuple[str, float]] = []
        self._outer = None

    def __enter__(self) -> _Measure:
        if self.timer.device == "cuda":
            import torch

            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        self._t0 = time.perf_counter()
        self._outer = getattr(_ACTIVE, "measure", None)
        _ACTIVE.measure = self if self.timer.substeps else None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _ACTIVE.measure = self._outer
        if exc_type is not None:
            return
        if self._events is not None:
            self._events[1].record()
            self._events[1].synchronize()
            seconds = self._events[0].elapsed_time(self._events[1]) / 1000.0
        else:
            seconds = time.perf_counter() - self._t0
        self.timing = StageTiming(self.name, seconds, self.note, self._t0, time.perf_counter(), self.lane,
                                  self.substeps)
        self.timer.add(self.timing)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


@contextmanager
def substep(name: str) -> Iterator[None]:
    """Mark a part of the running stage (module docstring); a no-op unless its timer has substeps on."""
    measure = getattr(_ACTIVE, "measure", None)
    if measure is None:
        yield
        return
    _sync(measure.timer.device)
    t0 = time.perf_counter()
    yield
    _sync(measure.timer.device)
    measure.substeps.append((name, time.perf_counter() - t0))

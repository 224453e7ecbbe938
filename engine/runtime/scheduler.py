"""A declared stage graph and the scheduler that runs it over the engine's lanes.

Each ``Stage`` names the values it reads and writes and the ``lane`` it runs on; ``StageGraph`` checks
the declaration once (every input is produced by exactly one stage or supplied by the caller, no cycles)
and orders the stages topologically. ``StageGraph.run`` executes them one after another on the calling
thread: the serial baseline, and the oracle of the overlap tests.

``Scheduler`` runs graphs as dataflow: a stage is handed to its lane as soon as its inputs exist. A lane is
a small pool of worker threads that serves stage runs in priority order (earlier requests first, then
graph order):

  * ``gpu``      one worker on the device's default stream: networks and GPU kernels, in order;
  * ``gpu-aux``  one worker on its own CUDA stream (on a CUDA engine): mesh-only device work that need not
                 wait for the networks, e.g. the texture fusion precompute while TextureGen diffuses
                 (paper 8.2);
  * ``cpu``      host work: picture decoding, UV packing (which fans out to worker processes), PNG
                 encoding and the GLB write.

A stage ends with a synchronisation of its own stream (``StageTimer`` waits for its end event), so values
cross lanes only once their device work is complete. ``Scheduler.run`` overlaps the stages of one request;
``Scheduler.run_many`` also pipelines requests (request N+1's diffusion runs while request N finishes its
host stages), with at most ``max_in_flight`` requests admitted at once. Results do not depend on the
overlap: every stage is a function of its inputs, and stages that share a lane run one at a time.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from profiling.stage_timer import StageTimer

StageFn = Callable[..., Mapping[str, Any]]
Progress = Callable[[int, int, str, float | None], None]
LANES = ("gpu", "gpu-aux", "cpu")


@dataclass(frozen=True)
class Stage:
    """name: shown in progress and timings; fn(**inputs) returns a mapping with exactly ``outputs``
    (plus an optional ``_note`` for the timings table and ``_warnings``: what was dropped or changed, which
    the user is told in the normal output); lane: where the scheduler runs it (``LANES``); commits: the
    stage writes the request's output file, so once started it runs to its end even when the request is
    interrupted (an interrupt leaves the complete file or none, never a partial one)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: StageFn
    lane: str = "cpu"
    commits: bool = False


class GraphError(ValueError):
    """The stage declaration is inconsistent (a programming error, not a user error)."""


class StageGraph:
    def __init__(self, stages: list[Stage], provided: tuple[str, ...]) -> None:
        self.provided = provided
        producer: dict[str, str] = {key: "<caller>" for key in provided}
        for stage in stages:
            if stage.lane not in LANES:
                raise GraphError(f"stage {stage.name} names lane '{stage.lane}', not one of {LANES}")
            for key in stage.outputs:
                if key in producer:
                    raise GraphError(f"'{key}' is produced by both {producer[key]} and {stage.name}")
                producer[key] = stage.name
        for stage in stages:
            missing = [key for key in stage.inputs if key not in producer]
            if missing:
                raise GraphError(f"stage {stage.name} reads {missing}, which nothing produces")
        self.producer = producer
        self.stages = self._topological(stages)

    def _topological(self, stages: list[Stage]) -> list[Stage]:
        done = set(self.provided)
        ordered: list[Stage] = []
        pending = list(stages)
        while pending:
            ready = [s for s in pending if all(key in done for key in s.inputs)]
            if not ready:
                raise GraphError(f"cycle among stages {[s.name for s in pending]}")
            for stage in ready:
                ordered.append(stage)
                done.update(stage.outputs)
                pending.remove(stage)
        return ordered

    def levels(self) -> list[list[str]]:
        """Stages grouped by dependency depth: stages in one level do not depend on each other."""
        depth: dict[str, int] = {key: 0 for key in self.provided}
        levels: dict[int, list[str]] = {}
        for stage in self.stages:
            d = 1 + max((depth[key] for key in stage.inputs), default=0)
            for key in stage.outputs:
                depth[key] = d
            levels.setdefault(d, []).append(stage.name)
        return [levels[d] for d in sorted(levels)]

    def check_provided(self, values: Mapping[str, Any]) -> None:
        absent = [key for key in self.provided if key not in values]
        if absent:
            raise GraphError(f"caller did not provide {absent}")

    def run(self, values: Mapping[str, Any], timer: StageTimer, progress: Progress | None = None
            ) -> dict[str, Any]:
        """Run every stage in order on this thread (the serial baseline); returns all values.

        progress(index, count, stage_name, seconds_or_None) is called before (None) and after each stage.
        """
        env = dict(values)
        self.check_provided(env)
        count = len(self.stages)
        for index, stage in enumerate(self.stages, start=1):
            if progress:
                progress(index, count, stage.name, None)
            produced, seconds = run_stage(stage, env, timer)
            env.update(produced)
            if progress:
                progress(index, count, stage.name, seconds)
        return env


def run_stage(stage: Stage, env: Mapping[str, Any], timer: StageTimer) -> tuple[dict[str, Any], float]:
    """Call one stage on its inputs, timed; returns (its declared outputs, seconds)."""
    with timer.measure(stage.name, stage.lane) as measure:
        out = stage.fn(**{key: env[key] for key in stage.inputs})
        measure.note = str(out.get("_note", "")) if isinstance(out, Mapping) else ""
    timer.warn(out.get("_warnings", ()))
    produced = {k: v for k, v in out.items() if k not in ("_note", "_warnings")}
    if set(produced) != set(stage.outputs):
        raise GraphError(f"stage {stage.name} returned {sorted(produced)}, declared {sorted(stage.outputs)}")
    return produced, measure.timing.seconds


# ------------------------------------------------------------------------------------------------ lanes
class Lane:
    """``workers`` threads serving submitted calls in priority order (lowest first). ``stream``: on a CUDA
    engine, each worker runs on a CUDA stream of its own instead of the default stream."""

    def __init__(self, name: str, workers: int = 1, stream: bool = False) -> None:
        self.name = name
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._tie = itertools.count()
        self._threads = [threading.Thread(target=self._serve, args=(stream,), name=f"assetgen-{name}-{i}",
                                          daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, priority: tuple, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        self._queue.put((priority, next(self._tie), fn, fut))
        return fut

    def _serve(self, stream: bool) -> None:
        context = _stream_context() if stream else None
        if context is not None:
            context.__enter__()
        while True:
            _, _, fn, fut = self._queue.get()
            if fn is None:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, re-raised there
                fut.set_exception(exc)

    def close(self, join: bool = True) -> None:
        for _ in self._threads:
            self._queue.put(((float("inf"),), next(self._tie), None, None))
        for t in self._threads if join else ():
            t.join(timeout=60)


def _stream_context():
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.stream(torch.cuda.Stream())


@dataclass
class RequestOutcome:
    """One request of ``run_many``: its index in the input order, values (None if it failed), error."""

    index: int
    env: dict[str, Any] | None
    timer: StageTimer
    error: BaseException | None = None


class Scheduler:
    """Runs stage graphs over lanes (module docstring). ``cuda``: the gpu-aux lane gets its own stream."""

    def __init__(self, cuda: bool = False, cpu_workers: int = 2) -> None:
        self.lanes = {"gpu": Lane("gpu"), "gpu-aux": Lane("gpu-aux", stream=cuda),
                      "cpu": Lane("cpu", workers=cpu_workers)}
        self._seq = itertools.count()
        self._cancel = threading.Event()
        self._lock = threading.Lock()           # orders "cancelled?" against starting a committing stage
        self._committing: set[Future] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def close(self) -> None:
        """Stop the lanes; after a cancel the threads are not waited for (abandoned stages are daemons)."""
        for lane in self.lanes.values():
            lane.close(join=not self.cancelled)

    def cancel(self) -> None:
        """Stop admitting stages: running stages finish, queued ones are dropped."""
        with self._lock:
            self._cancel.set()

    def interrupt(self, timeout: float = 120.0) -> bool:
        """A signal arrived: cancel, then wait until no committing stage (the output write) runs, so every
        output is complete or absent. Further interrupts while waiting are absorbed (the write takes well
        under a second). Returns False if a write was still running after ``timeout`` seconds."""
        self.cancel()
        with self._lock:
            writing = list(self._committing)
        deadline = time.monotonic() + timeout
        while writing and time.monotonic() < deadline:
            try:
                wait(writing, timeout=max(0.0, deadline - time.monotonic()))
                writing = [f for f in writing if not f.done()]
            except KeyboardInterrupt:
                continue
        return not writing

    def _submit(self, stage: Stage, seq: int, index: int, call: Callable[[], Any]) -> Future | None:
        """Hand a stage to its lane; a committing stage only while not cancelled (None: dropped)."""
        if not stage.commits:
            return self.lanes[stage.lane].submit((seq, index), call)
        with self._lock:
            if self._cancel.is_set():
                return None
            fut = self.lanes[stage.lane].submit((seq, index), call)
            self._committing.add(fut)
        fut.add_done_callback(self._committing.discard)
        return fut

    def run(self, graph: StageGraph, values: Mapping[str, Any], timer: StageTimer,
            progress: Progress | None = None) -> dict[str, Any]:
        """Run one request with its independent stages overlapped; returns all values or raises the first
        stage error (after the request's running stages have finished)."""
        return self._run(graph, values, timer, progress, next(self._seq))

    def _run(self, graph: StageGraph, values: Mapping[str, Any], timer: StageTimer,
             progress: Progress | None, seq: int) -> dict[str, Any]:
        env = dict(values)
        graph.check_provided(env)
        order = {stage.name: i for i, stage in enumerate(graph.stages, start=1)}
        pending, running = list(graph.stages), {}
        count, error = len(graph.stages), None
        while pending or running:
            if error is None and not self._cancel.is_set():
                for stage in [s for s in pending if all(k in env for k in s.inputs)]:
                    inputs = {k: env[k] for k in stage.inputs}
                    fut = self._submit(stage, seq, order[stage.name],
                                       lambda s=stage, i=inputs: run_stage(s, i, timer))
                    if fut is None:                                 # cancelled: the output is not written
                        break
                    pending.remove(stage)
                    running[fut] = stage
                    if progress:
                        progress(order[stage.name], count, stage.name, None)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                stage = running.pop(fut)
                if fut.exception() is not None:
                    error = error or fut.exception()
                    continue
                produced, seconds = fut.result()
                env.update(produced)
                if progress:
                    progress(order[stage.name], count, stage.name, seconds)
        if error is not None:
            raise error
        if pending:
            raise KeyboardInterrupt("scheduler cancelled")
        return env

    def run_many(self, graph: StageGraph, requests: Iterable[Mapping[str, Any]],
                 make_timer: Callable[[], StageTimer], max_in_flight: int = 2,
                 progress: Callable[[int], Progress | None] | None = None) -> Iterator[RequestOutcome]:
        """Pipeline requests through the lanes, at most ``max_in_flight`` at once; yields each request's
        outcome as it completes (a failed request carries its error; the others go on)."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        done: queue.Queue = queue.Queue()
        slots = threading.Semaphore(max_in_flight)
        started = 0

        def one(index: int, values: Mapping[str, Any], seq: int) -> None:
            timer = make_timer()
            try:
                env = self._run(graph, values, timer, progress(index) if progress else None, seq)
                done.put(RequestOutcome(index, env, timer))
            except BaseException as exc:  # noqa: BLE001 - reported per request, the batch goes on
                done.put(RequestOutcome(index, None, timer, exc))
            finally:
                slots.release()

        yielded = 0
        for index, values in enumerate(requests):
            while not slots.acquire(timeout=0.05):
                for outcome in _drain(done):
                    yielded += 1
                    yield outcome
            if self._cancel.is_set():
                slots.release()
                break
            threading.Thread(target=one, args=(index, values, next(self._seq)), daemon=True).start()
            started += 1
        while yielded < started:
            yielded += 1
            yield done.get()


def _drain(q: queue.Queue) -> Iterator[RequestOutcome]:
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return

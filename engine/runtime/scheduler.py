"""A declared stage graph and its executor.

Each ``Stage`` names the values it reads and writes; ``StageGraph`` checks the declaration once (every
input is produced by exactly one stage or supplied by the caller, no cycles) and orders the stages
topologically. The executor runs them one after another today; because dependencies are explicit,
``StageGraph.levels()`` already tells which stages may overlap (e.g. texture precompute beside diffusion,
paper 8.2), which is what a stream-parallel or CUDA-graph executor needs, without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from profiling.stage_timer import StageTimer

StageFn = Callable[..., Mapping[str, Any]]


@dataclass(frozen=True)
class Stage:
    """name: shown in progress and timings; fn(**inputs) returns a mapping with exactly ``outputs``."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: StageFn


class GraphError(ValueError):
    """The stage declaration is inconsistent (a programming error, not a user error)."""


class StageGraph:
    def __init__(self, stages: list[Stage], provided: tuple[str, ...]) -> None:
        self.provided = provided
        producer: dict[str, str] = {key: "<caller>" for key in provided}
        for stage in stages:
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

    def run(
        self,
        values: Mapping[str, Any],
        timer: StageTimer,
        progress: Callable[[int, int, str, float | None], None] | None = None,
    ) -> dict[str, Any]:
        """Run every stage in order; returns all values (inputs and outputs).

        progress(index, count, stage_name, seconds_or_None) is called before (None) and after each stage.
        """
        env = dict(values)
        absent = [key for key in self.provided if key not in env]
        if absent:
            raise GraphError(f"caller did not provide {absent}")
        count = len(self.stages)
        for index, stage in enumerate(self.stages, start=1):
            if progress:
                progress(index, count, stage.name, None)
            with timer.measure(stage.name) as measure:
                out = stage.fn(**{key: env[key] for key in stage.inputs})
                measure.note = str(out.get("_note", "")) if isinstance(out, Mapping) else ""
            produced = {k: v for k, v in out.items() if k != "_note"}
            if set(produced) != set(stage.outputs):
                raise GraphError(
                    f"stage {stage.name} returned {sorted(produced)}, declared {sorted(stage.outputs)}"
                )
            env.update(produced)
            if progress:
                progress(index, count, stage.name, timer.timings[-1].seconds)
        return env

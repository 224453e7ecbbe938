import threading
import time

import pytest

from engine.runtime.scheduler import GraphError, Scheduler, Stage, StageGraph
from profiling.stage_timer import StageTimer


def test_graph_orders_runs_and_times_stages():
    stages = [
        Stage("c", ("a2", "b"), ("c",), lambda a2, b: {"c": a2 + b, "_note": "sum"}),
        Stage("a", ("x",), ("a2",), lambda x: {"a2": 2 * x}),
        Stage("b", ("x",), ("b",), lambda x: {"b": x + 1}),
    ]
    graph = StageGraph(stages, provided=("x",))
    assert [s.name for s in graph.stages] == ["a", "b", "c"]
    assert graph.levels() == [["a", "b"], ["c"]]
    timer = StageTimer()
    seen = []
    env = graph.run({"x": 3}, timer, lambda i, n, name, s: seen.append((i, n, name, s is None)))
    assert env["c"] == 10
    assert [t.name for t in timer.timings] == ["a", "b", "c"] and timer.timings[2].note == "sum"
    assert seen[0] == (1, 3, "a", True) and seen[-1] == (3, 3, "c", False)
    table = timer.table()
    assert "sum of stages" in table and "critical path (wall)" in table


def test_graph_rejects_bad_declarations():
    with pytest.raises(GraphError, match="nothing produces"):
        StageGraph([Stage("a", ("y",), ("z",), lambda y: {"z": y})], provided=("x",))
    with pytest.raises(GraphError, match="produced by both"):
        StageGraph(
            [Stage("a", ("x",), ("z",), lambda x: {}), Stage("b", ("x",), ("z",), lambda x: {})], ("x",)
        )
    with pytest.raises(GraphError, match="cycle"):
        StageGraph([Stage("a", ("q",), ("p",), lambda q: {}), Stage("b", ("p",), ("q",), lambda p: {})], ())
    with pytest.raises(GraphError, match="lane"):
        StageGraph([Stage("a", ("x",), ("z",), lambda x: {"z": 1}, lane="tpu")], ("x",))
    graph = StageGraph([Stage("a", ("x",), ("z",), lambda x: {"w": 1})], ("x",))
    with pytest.raises(GraphError, match="returned"):
        graph.run({"x": 1}, StageTimer())


def _sleepy(name, inputs, outputs, seconds, lane, log):
    def fn(**kw):
        log.append((name, "start", time.perf_counter(), threading.current_thread().name))
        time.sleep(seconds)
        log.append((name, "end", time.perf_counter(), threading.current_thread().name))
        return {o: sum(kw.values()) + 1 for o in outputs}
    return Stage(name, inputs, outputs, fn, lane)


def _diamond(log):
    """x -> a (gpu) -> {b (cpu), c (gpu-aux)} -> d (gpu)"""
    return StageGraph([
        _sleepy("a", ("x",), ("a",), 0.05, "gpu", log),
        _sleepy("b", ("a",), ("b",), 0.3, "cpu", log),
        _sleepy("c", ("a",), ("c",), 0.3, "gpu-aux", log),
        _sleepy("d", ("b", "c"), ("d",), 0.05, "gpu", log),
    ], provided=("x",))


def test_scheduler_overlaps_independent_stages_and_matches_serial():
    log = []
    graph = _diamond(log)
    serial = graph.run({"x": 1}, StageTimer())
    scheduler = Scheduler()
    try:
        timer = StageTimer()
        env = scheduler.run(graph, {"x": 1}, timer)
    finally:
        scheduler.close()
    assert env == serial
    assert timer.wall() < 0.9 * timer.total()       # b and c ran at the same time
    lanes = {t.name: t.lane for t in timer.timings}
    assert lanes == {"a": "gpu", "b": "cpu", "c": "gpu-aux", "d": "gpu"}
    threads = {name: th for name, ev, _, th in log[-8:] if ev == "start"}
    assert threads["b"] != threads["c"] and "gpu" in threads["a"]


def test_scheduler_pipelines_requests_and_bounds_in_flight():
    log = []
    graph = StageGraph([
        _sleepy("net", ("x",), ("n",), 0.1, "gpu", log),
        _sleepy("host", ("n",), ("h",), 0.2, "cpu", log),
    ], provided=("x",))
    scheduler = Scheduler(cpu_workers=2)
    try:
        t0 = time.perf_counter()
        outcomes = list(scheduler.run_many(graph, [{"x": i} for i in range(6)], StageTimer, max_in_flight=2))
        wall = time.perf_counter() - t0
    finally:
        scheduler.close()
    assert sorted(o.index for o in outcomes) == list(range(6))
    assert all(o.error is None and o.env["h"] == o.index + 2 for o in outcomes)
    assert wall < 0.8 * 6 * 0.3                      # the host stage of N overlaps the net stage of N+1
    # never more than 2 requests between their first start and last end
    spans = [(min(t.start for t in o.timer.timings), max(t.end for t in o.timer.timings)) for o in outcomes]
    for s, _ in spans:
        assert sum(1 for a, b in spans if a <= s < b) <= 2


def test_failed_request_fails_alone():
    def boom(x):
        if x == 2:
            raise ValueError("bad picture 2")
        return {"y": x}

    graph = StageGraph([Stage("s", ("x",), ("y",), boom, "cpu")], ("x",))
    scheduler = Scheduler()
    try:
        outcomes = {o.index: o for o in scheduler.run_many(graph, [{"x": i} for i in range(4)], StageTimer)}
        with pytest.raises(ValueError, match="bad picture"):
            scheduler.run(graph, {"x": 2}, StageTimer())
    finally:
        scheduler.close()
    assert isinstance(outcomes[2].error, ValueError) and outcomes[2].env is None
    assert [outcomes[i].env["y"] for i in (0, 1, 3)] == [0, 1, 3]


def test_substeps_are_timed_only_when_the_timer_asks():
    """profiling.stage_timer.substep: parts of a stage are listed (in order, inside the stage's time) with
    substeps=True, and cost nothing (no entries) otherwise."""
    import time

    from profiling.stage_timer import StageTimer, substep

    def stage():
        with substep("first"):
            time.sleep(0.02)
        with substep("second"):
            time.sleep(0.01)

    on, off = StageTimer(substeps=True), StageTimer()
    for timer in (on, off):
        with timer.measure("stage", "cpu"):
            stage()
    names = [n for n, _ in on.timings[0].substeps]
    assert names == ["first", "second"] and off.timings[0].substeps == []
    first, second = (s for _, s in on.timings[0].substeps)
    assert 0.015 < first < on.timings[0].seconds and 0.005 < second < first
    assert "  . first" in on.table()

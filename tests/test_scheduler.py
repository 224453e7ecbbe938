import pytest

from engine.runtime.scheduler import GraphError, Stage, StageGraph
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
    assert "total" in timer.table()


def test_graph_rejects_bad_declarations():
    with pytest.raises(GraphError, match="nothing produces"):
        StageGraph([Stage("a", ("y",), ("z",), lambda y: {"z": y})], provided=("x",))
    with pytest.raises(GraphError, match="produced by both"):
        StageGraph(
            [Stage("a", ("x",), ("z",), lambda x: {}), Stage("b", ("x",), ("z",), lambda x: {})], ("x",)
        )
    with pytest.raises(GraphError, match="cycle"):
        StageGraph([Stage("a", ("q",), ("p",), lambda q: {}), Stage("b", ("p",), ("q",), lambda p: {})], ())
    graph = StageGraph([Stage("a", ("x",), ("z",), lambda x: {"w": 1})], ("x",))
    with pytest.raises(GraphError, match="returned"):
        graph.run({"x": 1}, StageTimer())

"""The GPU service benchmark's CPU smoke run (benchmarks/service_gpu.py ``--device cpu``: the tests' tiny
engine behind ``assetgen serve`` on loopback, 2 pictures one at a time and 2 at once): the report's rows
hold numbers, the CSV rows too, and a CPU worker reports no GPU memory rather than a 0. The figures are
not judged (benchmarks measure speed, tests do not); that they exist and are finite is."""

from __future__ import annotations

import csv
import math

from benchmarks.service_gpu import main

SUMMARY_ROWS = ("client latency", "engine critical path", "API overhead", "queue + dispatch",
                "worker around the engine", "HTTP (upload")


def _table_cells(text: str, first: str) -> list[str]:
    """The cells after the first one of the markdown row starting with ``first``."""
    for line in text.splitlines():
        if line.startswith("| ") and line[2:].strip().strip("*").startswith(first):
            return [c.strip().strip("*") for c in line.strip("|").split("|")[1:]]
    raise AssertionError(f"no row '{first}' in the report:\n{text}")


def _number(cell: str) -> float:
    value = float(cell.split()[0])
    assert math.isfinite(value), cell
    return value


def test_cpu_smoke_run_reports_numbers(shared_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--device", "cpu", "--pictures", "2", "--concurrent", "2", "--budget-s", "240",
               "--ready-timeout", "600", "--out-dir", str(out), "--csv", str(out / "cpu.csv")])
    text = (out / "service_gpu_flash_cpu.md").read_text()
    assert rc == 0, text
    assert text.startswith("<!-- device: cpu; torch ") and "; commit " in text.splitlines()[0]
    rows = [line for line in text.splitlines() if line.startswith("| T.png") or line.startswith("| typical")]
    assert len(rows) == 2
    for row in rows:
        client, engine, overhead = (_number(c) for c in row.strip("|").split("|")[1:4])
        assert client > engine > 0 and math.isclose(overhead, 1e3 * (client - engine), abs_tol=1.5)
    for name in SUMMARY_ROWS:
        unit, *quantiles = _table_cells(text, name)
        assert unit in ("s", "ms") and len(quantiles) == 3
        p50, p90, p99 = (_number(q) for q in quantiles)
        assert p50 <= p90 <= p99
    assert _number(_table_cells(text, "jobs succeeded")[0]) == 2
    assert _number(_table_cells(text, "through the API")[0]) > 0
    assert _number(_table_cells(text, "engine alone")[0]) > 0
    status = _table_cells(text, "status calls during the batch")[0]
    assert _number(status.split("/")[1]) > 0
    assert "absent: a CPU worker reports no GPU memory" in text
    with open(out / "cpu.csv") as fh:
        metrics = {r["metric"]: float(r["p50"]) for r in csv.DictReader(fh)}
    assert {"ready", "client_latency", "engine_critical_path", "api_overhead", "throughput_api",
            "throughput_engine_serial", "status_p99_under_load"} <= set(metrics)
    assert "gpu_peak_memory" not in metrics
    assert all(math.isfinite(v) and v > 0 for v in metrics.values())

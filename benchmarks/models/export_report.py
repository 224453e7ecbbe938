"""The export benchmark's report: one markdown file of tables, rewritten whole after every new or updated row
(so a run killed at its time limit still leaves every row measured so far), and CSV rows appended as they
are measured (``benchmarks.common.append_result``; the commit goes into ``config`` as well, for a device
copy without git).

Latency cells read "p50 [p10, p90]"; the CSV rows carry p50, p20, p80 (the results files' columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import append_result

SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "builds": ("Package builds and load (torch.export + AOTInductor; load = `trt_builds.packaged."
               "load_package` to the first output synchronised, in a process that already holds the GPU, "
               "the file in the page cache)",
               ("network", "precision", "recipe", "export s", "AOTI compile s", "package MB",
                "load to first inference s", "<= 10 s", "note")),
    "networks": ("Per network: eager export module vs torch.compile (default mode) vs the .pt2 package, same "
                 "inputs, synchronised wall time after warm-up, ms",
                 ("network", "inputs", "eager ms", "torch.compile ms", "package ms", "package / compile",
                  "within 5 %", "torch.compile first call s", "package vs eager rel. err", "repeats")),
    "chain": ("Network chain (shape: DINOv2 + MeshGen DDIM + dense shape decode; texture: VAE encode + "
              "TextureGen prepare + flow sampler + VAE decode), host inputs to host outputs, s",
              ("variant", "load s", "shape s", "texture s", "chain s", "chain / engine", "within 5 %",
               "note")),
    "cpp_build": ("C++ runtime: clean CMake + ninja build (libassetgen_runtime + assetgen_host)",
                  ("step", "seconds", "cores", "<= 600 s", "note")),
    "fp8": ("FP8 packages (quant/recipes/<network>.fp8.<arch>.json applied as the engine does)",
            ("network", "variant", "outcome", "export s", "AOTI compile s", "package MB", "load to first s",
             "eager fp8 ms", "torch.compile fp8 ms", "package fp8 ms", "package bf16 ms",
             "fp8 package / compile", "fp8 / bf16 package")),
    "skipped": ("Not measured", ("what", "why")),
    "targets": ("Issue 12 targets", ("target", "measured", "verdict")),
}


def stats(times: list[float]) -> dict[str, float]:
    """p50, p10, p90, p20, p80 of the samples."""
    a = np.asarray(times, np.float64)
    return {f"p{q}": float(np.percentile(a, q)) for q in (50, 10, 90, 20, 80)}


def spread(times: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """'p50 [p10, p90]' of ``times`` x ``scale``."""
    s = stats(times)
    return f"{s['p50'] * scale:.{digits}f} [{s['p10'] * scale:.{digits}f}, {s['p90'] * scale:.{digits}f}]"


def num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@dataclass
class Report:
    """The tables of one run. ``header``: lines of the opening HTML comment (device, torch, commit...)."""

    path: Path
    csv_path: Path
    gpu: str
    commit: str
    title: str
    header: list[str]
    intro: list[str]
    rows: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def put(self, section: str, key: str, cells: dict[str, object]) -> None:
        """Add or update the row ``key`` of ``section`` (cells by column name; a column never set prints
        '-'), then rewrite the file."""
        columns = SECTIONS[section][1]
        unknown = [c for c in cells if c not in columns]
        if unknown:
            raise KeyError(f"no columns {unknown} in {section}: {columns}")
        self.rows.setdefault(section, {}).setdefault(key, {}).update({c: str(v) for c, v in cells.items()})
        self.write()

    def get(self, section: str, key: str) -> dict[str, str] | None:
        return self.rows.get(section, {}).get(key)

    def skip(self, what: str, why: str) -> None:
        self.put("skipped", what, {"what": what, "why": why})

    def csv(self, name: str, variant: str, metric: str, unit: str, size: str, values: list[float] | float,
            config: str = "") -> None:
        """One results row: a list of samples gives p50/p20/p80, a number a single value."""
        cfg = f"{config} commit={self.commit}".strip()
        if isinstance(values, list):
            s = stats(values)
            append_result(self.csv_path, name, variant, metric, unit, size, s["p50"], s["p20"], s["p80"], cfg,
                          self.gpu)
        else:
            append_result(self.csv_path, name, variant, metric, unit, size, float(values), None, None, cfg,
                          self.gpu)

    def render(self) -> str:
        lines = ["<!--", *self.header, "-->", f"# {self.title}", "", *self.intro, ""]
        for section, (title, columns) in SECTIONS.items():
            rows = self.rows.get(section)
            if not rows:
                continue
            lines += [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(row.get(c, "-") for c in columns) + " |" for row in rows.values()]
            lines.append("")
        return "\n".join(lines)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".md.tmp")
        tmp.write_text(self.render())
        tmp.replace(self.path)


def parse_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The report's tables back: section title prefix -> rows (column -> cell), for tests and readers."""
    out: dict[str, list[dict[str, str]]] = {}
    title, columns = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            title, columns = line[3:], None
            out[title] = []
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if columns is None:
                columns = cells
            elif not set(line) <= set("|-"):
                out[title].append(dict(zip(columns, cells)))
    return out


# ------------------------------------------------------------------------------------- rows of each table
def put_build(report: Report, built, precision: str, preset: str, note: str = "") -> None:
    """A package build (``export_builds.Built``): its table row and CSV rows."""
    net, ok = built.network, built.error is None
    cells = {"network": net, "export s": num(built.export_s, 1),
             "AOTI compile s": num(built.compile_s, 1) if ok else "-",
             "package MB": num(built.size_mb, 1) if ok else "-"}
    if built.recipe == "norecipe":
        report.put("builds", net, {**cells, "precision": precision, "recipe": built.recipe,
                                   "note": note or (built.error or "")})
    else:
        outcome = "built" if ok else f"export/compile failed: {built.error}"
        report.put("fp8", f"{net} {built.variant}", {**cells, "variant": built.variant, "outcome": outcome})
    if ok:
        variant = f"{precision}.{built.recipe}.{built.variant}"
        for metric, value in (("export_s", built.export_s), ("compile_s", built.compile_s)):
            report.csv(f"export_{net}", variant, metric, "s", preset, value)
        report.csv(f"export_{net}", variant, "package_size", "MB", preset, built.size_mb)


def put_load(report: Report, net: str, precision: str, preset: str, seconds: float) -> None:
    report.put("builds", net, {"load to first inference s": num(seconds, 3),
                               "<= 10 s": "yes" if seconds <= 10 else "no"})
    report.csv(f"export_{net}", f"{precision}.norecipe", "load_first_s", "s", preset, seconds)


def ratio_cells(ratio: float | None) -> tuple[str, str]:
    return num(ratio, 3), "-" if ratio is None else ("yes" if ratio <= 1.05 else "no")


def put_network(report: Report, net: str, shapes: str, times: dict[str, list[float]], compile_s: float | None,
                err: float) -> None:
    """The eager / torch.compile / package row of one bf16 (fp32 on the CPU) network."""
    ratio = (stats(times["package"])["p50"] / stats(times["compile"])["p50"]) if "compile" in times else None
    share, within = ratio_cells(ratio)
    report.put("networks", net, {
        "network": net, "inputs": shapes, "eager ms": spread(times["eager"], 1e3),
        "torch.compile ms": spread(times["compile"], 1e3) if "compile" in times else "-",
        "package ms": spread(times["package"], 1e3), "package / compile": share, "within 5 %": within,
        "torch.compile first call s": num(compile_s, 1), "package vs eager rel. err": f"{err:.1e}",
        "repeats": "/".join(str(len(t)) for t in times.values())})


def put_fp8(report: Report, key: str, times: dict[str, list[float]], bf16_package_s: float | None,
            load_s: float, note: str) -> None:
    """The measured cells of one FP8 package's row."""
    fp8 = stats(times["package"])["p50"]
    compiled = stats(times["compile"])["p50"] if "compile" in times else None
    report.put("fp8", key, {
        "outcome": f"built and ran ({note})", "load to first s": num(load_s, 2),
        "eager fp8 ms": spread(times["eager"], 1e3),
        "torch.compile fp8 ms": spread(times["compile"], 1e3) if compiled else "-",
        "package fp8 ms": spread(times["package"], 1e3),
        "package bf16 ms": num(bf16_package_s and bf16_package_s * 1e3, 3),
        "fp8 package / compile": num(compiled and fp8 / compiled, 3),
        "fp8 / bf16 package": num(bf16_package_s and fp8 / bf16_package_s, 3)})


def put_chain(report: Report, key: str, label: str, times, engine, note: str, preset: str, grid: int) -> None:
    """One chain variant (``export_chain.ChainTimes``) against the engine's."""
    ratio = None if engine is None else stats(times.chain)["p50"] / stats(engine.chain)["p50"]
    share, within = ratio_cells(ratio)
    report.put("chain", key, {
        "variant": label, "load s": num(times.load_s, 2) if key != "engine" else "- (resident)",
        "shape s": spread(times.shape), "texture s": spread(times.texture), "chain s": spread(times.chain),
        "chain / engine": share, "within 5 %": within, "note": note})
    for metric, t in (("shape", times.shape), ("texture", times.texture), ("chain", times.chain)):
        report.csv(f"export_chain_{preset}", key, metric, "s", f"grid{grid}", t)


def put_cpp_build(report: Report, cpp) -> None:
    """The clean C++ build (``export_builds.CppBuild``)."""
    total = cpp.configure_s + (cpp.build_s or 0.0)
    report.put("cpp_build", "configure", {"step": "cmake configure (Ninja, Release)",
                                          "seconds": num(cpp.configure_s, 1), "cores": cpp.cores})
    within = "-" if cpp.error else ("yes" if total <= 600 else "no")
    note = cpp.error or f"configure + build {total:.1f} s on {cpp.cores} cores, beside the package builds"
    report.put("cpp_build", "build", {"step": "cmake --build -j 2", "seconds": num(cpp.build_s, 1),
                                      "cores": cpp.cores, "<= 600 s": within, "note": note})
    if cpp.error is None:
        report.csv("export_cpp_build", "cmake_ninja_j2", "clean_build_s", "s", "runtime+host", total)


def put_targets(report: Report, load_first: dict[str, float], preset: str) -> None:
    """The issue's four targets, from the rows measured so far."""
    rows = report.rows.get("networks", {})
    ratios = {n: float(r["package / compile"]) for n, r in rows.items()
              if r.get("package / compile", "-") != "-"}
    if ratios:
        worst, ok = max(ratios, key=lambda n: ratios[n]), sum(v <= 1.05 for v in ratios.values())
        measured = f"{ok} of {len(ratios)}; worst {worst} x{ratios[worst]:.3f}"
        report.put("targets", "pt2", {"target": "every .pt2 within 5 % of torch.compile (or faster)",
                                      "measured": measured,
                                      "verdict": "met" if ok == len(ratios) else "not met"})
    cpp = report.get("chain", "cpp")
    if cpp and cpp.get("chain / engine", "-") != "-":
        r = float(cpp["chain / engine"])
        report.put("targets", "chain", {"target": "C++ network chain within 5 % of the Python engine's",
                                        "measured": f"{preset}: x{r:.3f} (other preset: its own run)",
                                        "verdict": "met" if r <= 1.05 else "not met"})
    build = report.get("cpp_build", "build")
    if build and build.get("<= 600 s", "-") != "-":
        report.put("targets", "build", {"target": "clean C++ build <= 10 min on 2 cores",
                                        "measured": build["note"],
                                        "verdict": "met" if build["<= 600 s"] == "yes" else "not met"})
    if load_first:
        worst = max(load_first, key=lambda n: load_first[n])
        report.put("targets", "load", {
            "target": "package load to first inference <= 10 s per network",
            "measured": f"{len(load_first)} networks, worst {worst} {load_first[worst]:.2f} s",
            "verdict": "met" if all(v <= 10 for v in load_first.values()) else "not met"})

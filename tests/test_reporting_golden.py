"""The reporting package writes, byte for byte, what scripts/summarize.py and scripts/plot.py wrote before their
code moved into ``reporting/``: every layout and format, --order, --seeds, --plots (report.md and the figures) and
plot.py's options, on the saved grid of tests/reporting_grid.py (expected outputs in tests/data/reporting_golden)."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting_grid  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "data" / "reporting_golden"
RECORDED_WITH = "3.11.2"  # figure bytes depend on matplotlib (and its bundled FreeType): compared under this version


def test_outputs_are_byte_for_byte_those_recorded_before_the_move(tmp_path: Path) -> None:
    got = reporting_grid.outputs(reporting_grid.build(tmp_path / "grid"))
    expected = {p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(expected)
    for name in sorted(expected):
        if name.endswith(reporting_grid.FIGURES) and matplotlib.__version__ != RECORDED_WITH:
            names = [line.split()[1] for line in got[name].decode().splitlines()]
            assert names == [line.split()[1] for line in expected[name].decode().splitlines()], name
            continue
        assert got[name] == expected[name], f"{name} differs from {GOLDEN / name}"


def test_no_import_circle_between_the_scripts() -> None:
    """The scripts are command lines over the package: neither imports the other."""
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    for name, other in (("summarize", "plot"), ("plot", "summarize")):
        text = (scripts / f"{name}.py").read_text(encoding="utf-8")
        assert f"import {other}" not in text, name
    import importlib

    for module in ("runs", "text", "aggregate", "tables", "figures", "report"):
        importlib.import_module(f"reporting.{module}")


def test_a_layout_added_to_the_registry_is_a_summarize_option(tmp_path: Path) -> None:
    """Layouts are a registry: one entry makes ``--layout NAME`` work (e.g. the planned ablation / backbones)."""
    import importlib.util

    from reporting import tables

    spec = importlib.util.spec_from_file_location("summarize_cli", GOLDEN.parents[2] / "scripts" / "summarize.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    root = reporting_grid.build(tmp_path / "grid")

    def only_averages(grid: tables.Grid, order):
        return [t for t in tables.trainer_tables(grid, order) if t.title.endswith("— Average")]

    tables.LAYOUTS["averages"] = only_averages
    try:
        assert cli.main([str(root), "--metrics", "accuracy", "--layout", "averages"]) == 0
    finally:
        del tables.LAYOUTS["averages"]
    titles = [s.splitlines()[0] for s in (root / "summary.md").read_text(encoding="utf-8").split("## ")[1:]]
    assert titles == ["Few-shot: accuracy (%) — Average", "Base-to-novel: accuracy (%), K=16 — Average"]

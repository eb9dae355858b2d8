"""report.md: the Markdown tables, any extra sections (e.g. the reproduction report against a published source),
then every PNG figure embedded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reporting.runs import Run


def write_report(root: Path, runs: Sequence[Run], tables_md: str, *, order: Sequence[str] = (),
                 seeds: Sequence[int] | None = None, sections: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Draw the figures (``reporting.figures``) into ``root/figures`` and write ``root/report.md``: the tables, the
    ``sections`` (Markdown, in order), then every PNG figure embedded. Returns the names written (relative to
    ``root``) and the plotting problems (warnings)."""
    from reporting import figures as plot  # matplotlib only when figures are asked for

    figures, warnings = plot.render(runs, root / "figures", order=order, seeds=seeds)
    pngs = [f for f in figures if f.suffix == ".png"]
    lines = ["# Results", "", f"From the metrics.json and predictions.npz of {len(runs)} runs under {root}.", "",
             tables_md.rstrip(), ""]
    for section in sections:
        lines += [section.rstrip(), ""]
    lines += ["# Figures", ""]
    for png in pngs:
        rel = png.relative_to(root).as_posix()
        lines += [f"## {png.stem}", "", f"![{png.stem}]({rel})", f"(PDF: [{png.stem}.pdf]({rel[:-4]}.pdf))"
                  if png.with_suffix(".pdf").is_file() else "", ""]
    if not pngs:
        lines += ["No figure could be drawn (see the warnings).", ""]
    (root / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return ["report.md", f"figures/ ({len(figures)} files)"], warnings

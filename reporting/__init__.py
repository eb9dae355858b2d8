"""Reporting: everything between the runs' metrics.json files and what a user reads.

* ``reporting.runs``: collecting runs (``load_runs``).
* ``reporting.aggregate``: the numbers — means and population stds over seeds, Average rows, HM (``build_grids``).
* ``reporting.tables``: layouts (``LAYOUTS``), Markdown / LaTeX / CSV / JSON.
* ``reporting.figures``: few-shot curves, base / novel / HM bars, reliability diagrams, confusion matrices.
* ``reporting.report``: report.md.
* ``reporting.references``: published numbers as data (``references/*.yaml``) and the measured-vs-published tables.
* ``reporting.stats`` / ``reporting.compare``: paired comparison of two trainers (hierarchical bootstrap, Wilcoxon).

The command lines are scripts/summarize.py, scripts/plot.py and scripts/compare.py. Nothing here imports torch.
"""

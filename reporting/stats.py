"""Statistics of a paired comparison: hierarchical bootstrap intervals (numpy, seeded) and the Wilcoxon signed-rank
test (scipy.stats) over per-dataset mean differences.

Data shape: per dataset, a matrix ``(n_seeds, n_components)`` of paired per-seed values, and a statistic ``f`` that
maps the component means (over seeds) to that dataset's difference — ``a − b`` for plain values, ``HM(a_base,
a_novel) − HM(b_base, b_novel)`` for the harmonic mean (so a dataset's difference is computed from its seed-means,
as the tables compute HM). The overall difference is the mean over datasets of the per-dataset differences
(datasets weigh the same, as in the tables' Average rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000
LEVEL = 0.95
TIE = 0.005  # |difference| below this (0.00 when printed with 2 decimals) is a tie

Statistic = Callable[[np.ndarray], np.ndarray]  # (..., n_components) component means → (...) differences


def difference(means: np.ndarray) -> np.ndarray:
    """Components (a, b) → a − b."""
    return means[..., 0] - means[..., 1]


def hm_difference(means: np.ndarray) -> np.ndarray:
    """Components (a_base, a_novel, b_base, b_novel) → HM(a) − HM(b), HM = 2·B·N/(B+N) (0 when B + N = 0)."""
    def hm(b: np.ndarray, n: np.ndarray) -> np.ndarray:
        s = b + n
        return np.where(s == 0, 0.0, 2.0 * b * n / np.where(s == 0, 1.0, s))
    return hm(means[..., 0], means[..., 1]) - hm(means[..., 2], means[..., 3])


def point(values: Sequence[np.ndarray], f: Statistic = difference) -> tuple[float, list[float]]:
    """(mean over datasets of the per-dataset differences, the per-dataset differences)."""
    per = [float(f(v.mean(axis=0))) for v in values]
    return float(np.mean(per)), per


def hierarchical_bootstrap(values: Sequence[np.ndarray], f: Statistic = difference, *, n_boot: int = N_BOOT,
                           level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean over datasets of ``f`` (per dataset, of its seed-means): each replicate
    draws the datasets with replacement, then, within each drawn dataset, its seeds with replacement — so 3 seeds
    are not counted as 3 independent datasets. Seeded: the same values give the same interval."""
    if not values:
        raise ValueError("no dataset to resample")
    rng = np.random.default_rng(seed)
    d = len(values)
    s_max = max(v.shape[0] for v in values)
    c = values[0].shape[1]
    padded = np.zeros((d, s_max, c))
    n = np.array([v.shape[0] for v in values])
    for i, v in enumerate(values):
        padded[i, : v.shape[0]] = v
    pick = rng.integers(0, d, size=(n_boot, d))  # datasets
    n_pick = n[pick]  # (B, D)
    seeds = np.floor(rng.random((n_boot, d, s_max)) * n_pick[..., None]).astype(int)  # seeds within each dataset
    valid = np.arange(s_max)[None, None, :] < n_pick[..., None]
    drawn = padded[pick[..., None], seeds]  # (B, D, S, C)
    means = (drawn * valid[..., None]).sum(axis=2) / n_pick[..., None]
    stats = f(means).mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def seed_bootstrap(values: np.ndarray, f: Statistic = difference, *, n_boot: int = N_BOOT, level: float = LEVEL,
                   seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of one dataset's difference, resampling its seeds; None with fewer than 2 seeds."""
    if values.shape[0] < 2:
        return None
    return hierarchical_bootstrap([values], f, n_boot=n_boot, level=level, seed=seed)


@dataclass(frozen=True)
class Wilcoxon:
    """The Wilcoxon signed-rank test over per-dataset differences, or why it was not run."""

    statistic: float | None = None
    pvalue: float | None = None
    n: int = 0  # datasets with a non-zero difference (zeros are dropped, Wilcoxon's method)
    method: str = ""
    not_run: str = ""

    def text(self) -> str:
        if self.not_run:
            return f"not run: {self.not_run}"
        return f"p = {self.pvalue:.3g} (W = {self.statistic:g}, n = {self.n}, {self.method})"


MIN_DATASETS = 2


def wilcoxon(per_dataset: Sequence[float]) -> Wilcoxon:
    """Two-sided Wilcoxon signed-rank test of the per-dataset differences against 0 (scipy.stats.wilcoxon, exact
    distribution when possible). Not run with fewer than 2 paired datasets, or when every difference is 0."""
    from scipy import stats

    d = np.asarray(per_dataset, dtype=float)
    if len(d) < MIN_DATASETS:
        return Wilcoxon(n=len(d), not_run=f"fewer than {MIN_DATASETS} paired datasets ({len(d)})")
    nonzero = d[np.abs(d) > 0]
    if len(nonzero) == 0:
        return Wilcoxon(n=0, not_run="every per-dataset difference is 0")
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    # scipy's method="auto": exact null distribution for n <= 50 distinct non-zero differences; with ties or zeros,
    # every sign permutation for n <= 13; else the normal approximation
    ties = len(nonzero) < len(d) or len(np.unique(np.abs(nonzero))) < len(nonzero)
    exact = len(d) <= (13 if ties else 50)
    method = ("exact, all sign permutations" if ties else "exact") if exact else "normal approximation"
    return Wilcoxon(float(res.statistic), float(res.pvalue), len(nonzero), method)


def win_tie_loss(per_dataset: Sequence[float], tie: float = TIE) -> tuple[int, int, int]:
    """(wins, ties, losses) of A over B: per-dataset differences above ``tie``, within it, below ``-tie``."""
    d = np.asarray(per_dataset, dtype=float)
    return int(np.sum(d >= tie)), int(np.sum(np.abs(d) < tie)), int(np.sum(d <= -tie))


def paired_matrix(a: Mapping[int, Sequence[float]], b: Mapping[int, Sequence[float]]) -> np.ndarray:
    """Per seed present in both, the row ``[*a[seed], *b[seed]]`` (seeds ascending)."""
    seeds = sorted(set(a) & set(b))
    return np.array([[*a[s], *b[s]] for s in seeds], dtype=float).reshape(len(seeds), -1)

"""Patient-level bootstrap: confidence intervals that resample patients, not slices (the
slices of one patient are not independent). One module for every CI of the project: median
Dice and its paired difference to a baseline (vectorised: the order statistics of many
weighted resamples at once), means and rates, and any statistic of paired slice values
(e.g. the Spearman correlation of confidence and Dice)."""
from __future__ import annotations

from typing import Callable

import numpy as np

_BLOCK_ELEMENTS = 4_000_000  # resamples x max(patients, runs, run length) per block


def _prepare_groups(values, groups):
    values = np.asarray(values, np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if len(values) != len(groups):
        raise ValueError(f"values and groups differ in length: {len(values)} vs {len(groups)}")
    keep = ~np.isnan(values)
    _, g = np.unique(groups[keep], return_inverse=True)
    return values[keep], g.reshape(-1)


def _draw_counts(rng: np.random.Generator, n_groups: int, n: int) -> np.ndarray:
    """Patient multiplicities ``(n, G)`` of ``n`` resamples of ``G`` patients with replacement."""
    draws = rng.integers(0, n_groups, size=(n, n_groups))
    flat = (draws + np.arange(n)[:, None] * n_groups).ravel()
    return np.bincount(flat, minlength=n * n_groups).reshape(n, n_groups)


class _RankIndex:
    """Sorted values ``v (S,)`` of patients ``g (S,)``, cut into ``nc`` runs of ``L`` values,
    to find order statistics of many weighted resamples without a cumulative sum over all S
    values per resample: ``M (G, nc)`` counts each patient's values per run, so a matrix
    product gives every resample's weight per run; the run holding a rank is found from the
    cumulative sum over runs, and only that run's ``L`` weights are summed further."""

    def __init__(self, v: np.ndarray, g: np.ndarray, n_groups: int):
        s = len(v)
        self.v, self.n_groups = v, n_groups
        self.nc = max(1, min(-(-s // 64), 4_000_000 // max(1, n_groups)))
        self.L = -(-s // self.nc)
        run = np.arange(s) // self.L
        self.M = np.bincount(g * self.nc + run, minlength=n_groups * self.nc).reshape(
            n_groups, self.nc).astype(np.float64)
        pad = np.full(self.nc * self.L, n_groups)  # padding: a phantom patient of weight 0
        pad[:s] = g
        self.runs = pad.reshape(self.nc, self.L)
        self.n_g = np.bincount(g, minlength=n_groups).astype(np.float64)

    def medians(self, counts: np.ndarray) -> np.ndarray:
        """Median of each resample ``counts (b, G)`` (patient multiplicities)."""
        counts = counts.astype(np.float64)  # integers: exact in float64 products
        total = np.rint(counts @ self.n_g).astype(np.int64)
        per_run = np.cumsum(counts @ self.M, axis=1)  # (b, nc) cumulative weight up to run
        ext = np.concatenate([counts, np.zeros((len(counts), 1))], axis=1)
        rows = np.arange(len(counts))
        out = np.zeros(len(counts))
        for k in ((total - 1) // 2, total // 2):  # the two middle ranks (equal if odd)
            c = (per_run <= k[:, None]).sum(axis=1)  # run holding rank k
            before = np.where(c > 0, per_run[rows, np.maximum(c - 1, 0)], 0)
            w = np.cumsum(ext[rows[:, None], self.runs[c]], axis=1)  # (b, L)
            p = (w <= (k - before)[:, None]).sum(axis=1)
            out += self.v[c * self.L + p]
        return out / 2


def _resampled_medians(samples: list[np.ndarray], g: np.ndarray, n_groups: int,
                       n_resamples: int, seed: int) -> list[np.ndarray]:
    """Medians ``(n_resamples,)`` of each of ``samples`` (values ``(S,)`` of the same slices,
    patients ``g (S,)`` in ``0..n_groups-1``) under the **same** patient-bootstrap draws."""
    indices = []
    for v in samples:
        order = np.argsort(v, kind="stable")
        indices.append(_RankIndex(v[order], g[order], n_groups))
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n_groups, *(i.nc for i in indices),
                                          *(i.L for i in indices)))
    meds = [np.empty(n_resamples) for _ in indices]
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        counts = _draw_counts(rng, n_groups, stop - start)
        for out, index in zip(meds, indices):
            out[start:stop] = index.medians(counts)
    return meds


def bootstrap_median_ci(values, groups, n_resamples: int = 10000, ci: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """Median of ``values (S,)`` with a patient-level bootstrap percentile CI.

    Each resample draws the ``G`` distinct ``groups (S,)`` (patients) with replacement and
    takes the median of all slices of the drawn patients, a patient drawn twice counting twice
    (the standard median of that multiset: mean of the two middle values for an even count).
    NaN values are dropped first. Returns ``(median, low, high)``; all nan without values.
    """
    v, g = _prepare_groups(values, groups)
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    meds, = _resampled_medians([v], g, int(g.max()) + 1, n_resamples, seed)
    return (float(np.median(v)),) + _percentile_interval(meds, ci)


def bootstrap_median_difference_ci(values_a, values_b, groups, n_resamples: int = 10000,
                                   ci: float = 0.95, seed: int = 0
                                   ) -> tuple[float, float, float]:
    """Paired difference ``median(a) - median(b)`` of two scores of the **same** slices
    (``values_a, values_b, groups (S,)``, e.g. a model's Dice and a baseline's), with a
    patient-bootstrap percentile CI: each resample draws the patients once and takes both
    medians on it, so the patient-to-patient variation both share cancels. Slices where
    either value is NaN are dropped. Returns ``(difference, low, high)``; nan without values.
    """
    a = np.asarray(values_a, np.float64).reshape(-1)
    b = np.asarray(values_b, np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if not len(a) == len(b) == len(groups):
        raise ValueError(f"values_a, values_b and groups differ in length: "
                         f"{len(a)}, {len(b)}, {len(groups)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    if not keep.any():
        return np.nan, np.nan, np.nan
    _, g = np.unique(groups[keep], return_inverse=True)
    g = g.reshape(-1)
    meds_a, meds_b = _resampled_medians([a[keep], b[keep]], g, int(g.max()) + 1, n_resamples,
                                        seed)
    return (float(np.median(a[keep]) - np.median(b[keep])),) + \
        _percentile_interval(meds_a - meds_b, ci)


def bootstrap_mean_ci(values, groups, n_resamples: int = 10000, ci: float = 0.95,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values (S,)`` with the patient-level bootstrap percentile CI of
    :func:`bootstrap_median_ci` (same resamples for the same seed); e.g. a rate of 0/1 values."""
    v, g = _prepare_groups(values, groups)
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    n_groups = int(g.max()) + 1
    sums, n_g = np.bincount(g, v, minlength=n_groups), np.bincount(g, minlength=n_groups)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n_groups)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        counts = _draw_counts(rng, n_groups, min(block, n_resamples - start))
        means[start:start + len(counts)] = (counts @ sums) / (counts @ n_g)
    return (float(v.mean()),) + _percentile_interval(means, ci)


def _percentile_interval(stats: np.ndarray, ci: float) -> tuple[float, float]:
    low, high = np.percentile(stats, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return float(low), float(high)


def bootstrap_statistic_ci(statistic: Callable[[np.ndarray], float], groups,
                           n_resamples: int = 10000, ci: float = 0.95, seed: int = 0
                           ) -> tuple[float, float, int]:
    """Percentile CI of ``statistic(idx)`` (a function of slice indices into ``groups (S,)``)
    over patient-bootstrap resamples; resamples where it is not finite are dropped. Returns
    ``(low, high, n_patients)``."""
    patients, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == p) for p in range(len(patients))]
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = np.concatenate([members[p] for p in rng.integers(0, len(patients), len(patients))])
        stats[i] = statistic(idx)
    stats = stats[np.isfinite(stats)]
    alpha = (1 - ci) / 2
    low, high = (np.quantile(stats, [alpha, 1 - alpha]) if len(stats) else (np.nan, np.nan))
    return float(low), float(high), int(len(patients))

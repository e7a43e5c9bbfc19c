"""LDIFF: how much a layer mixes discriminative and non-discriminative filters (TVSPrune, Murti et al., 2023).

The paper introduces LDIFF as "a heuristic to quantify the extent to which a layer possesses a mixture
of discriminative and non-discriminative filters" and reports that it indicates how well RANDOM pruning
of that layer goes. Its formula is not recoverable (``shared/papers/tvsprune.md``), so this project
defines it and tests the claim.

Definition (this project). For a layer with filter scores s_1..s_n >= 0 (TVSPrune's score: min over
class pairs of the Gaussian distance, :func:`pruning_lib.scoring.class_statistics.filter_scores`),

    LDIFF = Gini(s) = sum_i sum_j |s_i - s_j| / (2 n^2 mean(s))       in [0, 1 - 1/n].

Why the Gini coefficient of the scores:
- "mixture" means unequal: LDIFF = 0 when every filter is equally discriminative (all strong or all
  weak alike), and it grows as a few strong filters sit among many weak ones (1 - 1/n when one filter
  holds all the separability);
- it is scale-free (scores of different layers live on different scales: later layers separate
  classes better), so it compares layers, like the paper's max-normalisation s_j / max_k s_k, but it
  uses every score instead of the single noisiest one (the maximum);
- it is a relative mean absolute difference: robust, no bins or thresholds to choose.
LDIFF = 0 is returned for a layer whose scores are all zero (no mixture: nothing discriminates).

The experiment that tests the paper's claim on the course's networks (random pruning of one layer
at a time against its LDIFF) is :mod:`pruning_lib.course.ldiff_experiment`.
"""
from __future__ import annotations

import numpy as np
import torch


# --------------------------------------------------------------------------- the statistic

def ldiff(scores) -> float:
    """LDIFF of one layer: the Gini coefficient of its (non-negative) filter scores; see the module
    docstring. 0 = all filters alike, up to 1 - 1/n = one filter holds all the separability."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if s.numel() == 0:
        raise ValueError("LDIFF needs at least one filter score; got an empty vector")
    if torch.isnan(s).any() or (s < 0).any():
        raise ValueError("filter scores must be non-negative numbers (distances); got "
                         f"min {s.min().item():.3g}, NaN: {bool(torch.isnan(s).any())}")
    total = s.sum()
    if total == 0:
        return 0.0
    # sum_i sum_j |s_i - s_j| = 2 sum_k (2k - n - 1) s_(k) over the sorted scores (k = 1..n)
    n = s.numel()
    k = torch.arange(1, n + 1, dtype=torch.float64)
    mad_sum = 2.0 * ((2 * k - n - 1) * s.sort().values).sum()
    return float(mad_sum / (2.0 * n * total))


def normalised_scores(scores) -> torch.Tensor:
    """Scores divided by the layer's maximum (the released code's within-layer normalisation)."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    m = s.max()
    return s / m if m > 0 else torch.zeros_like(s)


# --------------------------------------------------------------------------- rank correlation

def rankdata(x) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (as ``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    return (sums / counts)[inverse]


def spearman(x, y) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (average-tie) ranks."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need two sequences of equal length >= 3; got {len(x)} and {len(y)}")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def permutation_pvalue(x, y, n_perm: int = 20_000, seed: int = 0) -> float:
    """Two-sided p-value of Spearman's rho under 'no association', by shuffling y (seeded)."""
    rho = abs(spearman(x, y))
    rx = rankdata(x) - (len(x) + 1) / 2
    ry = rankdata(y) - (len(y) + 1) / 2
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, len(ry))), axis=1)
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    null = np.abs((ry[perms] * rx[None, :]).sum(1) / den)
    return float((np.sum(null >= rho - 1e-12) + 1) / (n_perm + 1))


__all__ = ["ldiff", "normalised_scores", "rankdata", "spearman", "permutation_pvalue"]

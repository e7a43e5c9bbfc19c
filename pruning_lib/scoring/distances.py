"""Distances between Gaussians for scoring filters by class separability (TVSPrune, Murti et al., ICLR 2023).

TVSPrune models the output of filter j given class c as a Gaussian N(mu_c, var_c) and scores the filter
by how well its worst pair of classes can be told apart: the total variation (TV) distance
TV(P, Q) = sup_A |P(A) - Q(A)| = 1/2 int |p - q| (the Bayes error between two equally likely classes
from this filter alone is (1 - TV) / 2). See ``shared/papers/tvsprune.md``.

- :func:`tv_gaussian_1d`: the EXACT TV between two 1-D Gaussians. Their log-density ratio is a quadratic,
  so the densities cross at most twice; TV = |P(I) - Q(I)| for the interval I between the crossings.
- :func:`hellinger_gaussian` / :func:`hellinger_gaussian_diag`: the closed-form Hellinger distance
  H, with H^2 = 1 - BC and BC the Bhattacharyya coefficient.
- :func:`tv_bounds`: H^2 <= TV <= H sqrt(2 - H^2) <= sqrt(2) H (the lower bound H^2 is the usable score
  in many dimensions, where the exact TV has no closed form).
- :func:`pairwise_min` / :func:`pair_matrix`: a distance for every class pair, vectorised over pairs and
  filters; the filter score is the minimum over the K(K-1)/2 pairs.

All functions broadcast their arguments like ``torch`` arithmetic, compute in float64 and return the
promoted floating dtype of the inputs (float64 stays float64, float32 comes back as float32).
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch

Tensorish = Union[torch.Tensor, float, int]
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Variances are clamped to at least this value, so a constant (dead) filter gives finite distances:
#: two point masses at the same value have distance 0, at different values a distance near the maximum.
VAR_FLOOR = 1e-12


def _prepare(mu1: Tensorish, var1: Tensorish, mu2: Tensorish, var2: Tensorish, eps: float):
    """Broadcast to float64 tensors, check the variances, clamp them to ``eps``; also return the out dtype."""
    ts = [torch.as_tensor(t) for t in (mu1, var1, mu2, var2)]
    dtype = torch.float64
    floats = [t.dtype for t in ts if t.is_floating_point()]
    if floats:
        dtype = floats[0]
        for d in floats[1:]:
            dtype = torch.promote_types(dtype, d)
    device = next((t.device for t in ts if t.dim() > 0), ts[0].device)
    ts = [t.to(device=device, dtype=torch.float64) for t in ts]
    for name, v in (("var1", ts[1]), ("var2", ts[3])):
        if torch.isnan(v).any() or (v < 0).any():
            raise ValueError(f"{name} must hold variances (>= 0, not NaN); got min {v.min().item():.3g}. "
                             "Pass variances, not standard deviations or log-variances.")
    m1, v1, m2, v2 = torch.broadcast_tensors(ts[0], ts[1].clamp_min(eps), ts[2], ts[3].clamp_min(eps))
    return m1, v1, m2, v2, dtype


def _mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """P(lo < Z < hi) for a standard normal Z, accurate in both tails (lo <= hi, +-inf allowed)."""
    upper_tail = torch.special.ndtr(-lo) - torch.special.ndtr(-hi)     # accurate when lo > 0
    lower_tail = torch.special.ndtr(hi) - torch.special.ndtr(lo)       # accurate when hi < 0
    return torch.where(lo > 0, upper_tail, lower_tail)


def tv_equal_variance(mu1: Tensorish, mu2: Tensorish, var: Tensorish) -> torch.Tensor:
    """TV between N(mu1, var) and N(mu2, var): 2 Phi(|d| / (2 sigma)) - 1 = erf(|d| / (2 sqrt(2) sigma))."""
    m1, v, m2, _, dtype = _prepare(mu1, var, mu2, var, VAR_FLOOR)
    return torch.erf((m1 - m2).abs() / (2.0 * math.sqrt(2.0) * v.sqrt())).to(dtype)


def crossings(mu1: Tensorish, var1: Tensorish, mu2: Tensorish, var2: Tensorish,
              eps: float = VAR_FLOOR) -> tuple[torch.Tensor, torch.Tensor]:
    """The points r1 <= r2 where the two densities are equal (+-inf where there is only one crossing).

    log p(x) - log q(x) = a x^2 + b x + c with a = (1/v2 - 1/v1)/2, b = m1/v1 - m2/v2,
    c = m2^2/(2 v2) - m1^2/(2 v1) + log(v2/v1)/2. Roots by the cancellation-free form
    q = -(b + sign(b) sqrt(b^2 - 4ac))/2, roots q/a and c/q, so equal variances (a -> 0) leave one
    finite root -c/b and send the other to infinity. Identical Gaussians return (nan, nan)."""
    m1, v1, m2, v2, _ = _prepare(mu1, var1, mu2, var2, eps)
    return _crossings(m1, v1, m2, v2)


def _crossings(m1, v1, m2, v2):
    a = 0.5 * (1.0 / v2 - 1.0 / v1)
    b = m1 / v1 - m2 / v2
    c = 0.5 * (m2 * m2 / v2 - m1 * m1 / v1) + 0.5 * torch.log(v2 / v1)
    disc = (b * b - 4.0 * a * c).clamp_min(0.0)      # >= 0 for Gaussians; clamp rounding only
    sign_b = torch.where(b >= 0, 1.0, -1.0).to(b)
    q = -0.5 * (b + sign_b * disc.sqrt())
    inf = torch.full_like(a, math.inf)
    r_a = torch.where(a != 0, q / torch.where(a != 0, a, torch.ones_like(a)), torch.where(q >= 0, -inf, inf))
    r_b = torch.where(q != 0, c / torch.where(q != 0, q, torch.ones_like(q)), torch.full_like(a, math.nan))
    return torch.minimum(r_a, r_b), torch.maximum(r_a, r_b)


def tv_gaussian_1d(mu1: Tensorish, var1: Tensorish, mu2: Tensorish, var2: Tensorish,
                   eps: float = VAR_FLOOR) -> torch.Tensor:
    """Exact total variation between N(mu1, var1) and N(mu2, var2), elementwise with broadcasting.

    Between the crossings r1 < r2 one density is above the other and outside them below, so
    TV = |[Phi1(r2) - Phi1(r1)] - [Phi2(r2) - Phi2(r1)]| with Phi_i the CDF of Gaussian i
    (TVSPrune note, "1-D Gaussians also have an exact TV"). Variances are clamped to ``eps``."""
    m1, v1, m2, v2, dtype = _prepare(mu1, var1, mu2, var2, eps)
    r1, r2 = _crossings(m1, v1, m2, v2)
    s1, s2 = v1.sqrt(), v2.sqrt()
    p_in = _mass((r1 - m1) / s1, (r2 - m1) / s1)
    q_in = _mass((r1 - m2) / s2, (r2 - m2) / s2)
    tv = (p_in - q_in).abs()
    same = (m1 == m2) & (v1 == v2)
    tv = torch.where(same | torch.isnan(tv), torch.zeros_like(tv), tv)
    return tv.clamp(0.0, 1.0).to(dtype)


def _log_bc_1d(m1, v1, m2, v2):
    """log Bhattacharyya coefficient of two 1-D Gaussians: 1/2 log(2 s1 s2 / (v1 + v2)) - d^2 / (4 (v1 + v2)).

    The variance term is -1/2 log cosh(t), t = log(s1/s2), written stably, so it is exactly 0 for equal
    variances (identical Gaussians then have H = 0 exactly, not a rounding residue)."""
    t = (0.5 * torch.log(v1 / v2)).abs()
    log_cosh = t + torch.log1p(torch.exp(-2.0 * t)) - math.log(2.0)
    return -0.5 * log_cosh - (m1 - m2) ** 2 / (4.0 * (v1 + v2))


def hellinger_sq_gaussian(mu1: Tensorish, var1: Tensorish, mu2: Tensorish, var2: Tensorish,
                          diagonal: bool = False, eps: float = VAR_FLOOR) -> torch.Tensor:
    """Squared Hellinger distance H^2 = 1 - BC between Gaussians, the lower bound on TV.

    BC = |S1|^(1/4) |S2|^(1/4) / |S|^(1/2) exp(-d^T S^-1 d / 8), S = (S1 + S2)/2 (TVSPrune note). With
    ``diagonal=True`` the last dimension holds the features of diagonal-covariance Gaussians, whose BC
    is the product of the per-feature BCs (the last dimension is reduced); otherwise elementwise 1-D.
    Computed as -expm1(log BC), accurate for tiny distances."""
    m1, v1, m2, v2, dtype = _prepare(mu1, var1, mu2, var2, eps)
    log_bc = _log_bc_1d(m1, v1, m2, v2)
    if diagonal:
        if log_bc.dim() == 0:
            raise ValueError("diagonal=True needs a last dimension of features; got scalars")
        log_bc = log_bc.sum(-1)
    return (-torch.expm1(log_bc.clamp_max(0.0))).clamp(0.0, 1.0).to(dtype)


def hellinger_gaussian(mu1: Tensorish, var1: Tensorish, mu2: Tensorish, var2: Tensorish,
                       diagonal: bool = False, eps: float = VAR_FLOOR) -> torch.Tensor:
    """Hellinger distance H = sqrt(1 - BC) in [0, 1] between Gaussians (1-D elementwise, or diagonal
    multivariate over the last dimension with ``diagonal=True``); see :func:`hellinger_sq_gaussian`."""
    return hellinger_sq_gaussian(mu1, var1, mu2, var2, diagonal=diagonal, eps=eps).sqrt()


def hellinger_gaussian_diag(mu1: Tensorish, var1: Tensorish, mu2: Tensorish, var2: Tensorish,
                            eps: float = VAR_FLOOR) -> torch.Tensor:
    """Hellinger distance between diagonal Gaussians whose last dimension holds the features."""
    return hellinger_gaussian(mu1, var1, mu2, var2, diagonal=True, eps=eps)


def tv_bounds(h: Tensorish) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) bounds on TV from the Hellinger distance H: (H^2, H sqrt(2 - H^2)).

    Both follow from H^2 = 1 - BC: 1 - BC <= TV <= sqrt(1 - BC^2). The upper bound is itself
    <= sqrt(2) H, the looser form quoted in the TVSPrune note."""
    h = torch.as_tensor(h)
    if not h.is_floating_point():
        h = h.double()
    if (h < 0).any() or (h > 1 + 1e-9).any():
        raise ValueError("Hellinger distances lie in [0, 1] (H^2 = 1 - BC); pass H, not H^2 unscaled "
                         "or a distance with another normalisation")
    h2 = h * h
    return h2, h * (2.0 - h2).clamp_min(0.0).sqrt()


def mean_gap(mu1: Tensorish, var1: Tensorish, mu2: Tensorish, var2: Tensorish) -> torch.Tensor:
    """|mu1 - mu2|, the released TVSPrune code's score (for a scalar summary): it ignores the variances,
    which ranks filters like H^2 only when every class shares one variance."""
    m1, _, m2, _, dtype = _prepare(mu1, var1, mu2, var2, VAR_FLOOR)
    return (m1 - m2).abs().to(dtype)


#: Named per-pair distances usable as ``score_fn`` (all symmetric, zero for identical Gaussians).
SCORES: dict[str, ScoreFn] = {
    "tv_exact": tv_gaussian_1d,
    "hellinger_lb": hellinger_sq_gaussian,     # H^2, the lower bound on TV
    "hellinger": hellinger_gaussian,
    "mean_gap": mean_gap,
}


def resolve_score(score_fn: str | ScoreFn) -> ScoreFn:
    """A score function from its name in :data:`SCORES`, or the callable itself."""
    if callable(score_fn):
        return score_fn
    if score_fn not in SCORES:
        raise ValueError(f"unknown distance {score_fn!r}; choose one of {sorted(SCORES)} or pass a callable "
                         "f(mu1, var1, mu2, var2)")
    return SCORES[score_fn]


def _check_kf(means: torch.Tensor, vars: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    means, vars = torch.as_tensor(means), torch.as_tensor(vars)
    if means.shape != vars.shape or means.dim() != 2:
        raise ValueError(f"means and vars must both have shape (classes K, filters F); got "
                         f"{tuple(means.shape)} and {tuple(vars.shape)}")
    if means.shape[0] < 2:
        raise ValueError(f"need at least 2 classes to form a pair; got K={means.shape[0]}")
    return means, vars


def pair_matrix(score_fn: str | ScoreFn, means: torch.Tensor, vars: torch.Tensor) -> torch.Tensor:
    """(K, K, F) distances between every pair of classes for each of F filters (zero diagonal),
    e.g. for a heatmap. ``means``/``vars`` have shape (K, F)."""
    fn = resolve_score(score_fn)
    means, vars = _check_kf(means, vars)
    out = fn(means[:, None, :], vars[:, None, :], means[None, :, :], vars[None, :, :])
    eye = torch.eye(means.shape[0], dtype=torch.bool, device=out.device)[:, :, None]
    return out.masked_fill(eye, 0.0)


def pairwise_min(score_fn: str | ScoreFn, means: torch.Tensor, vars: torch.Tensor,
                 return_pair: bool = False):
    """(F,) minimum over all K(K-1)/2 class pairs c < c' of score_fn(mu_c, var_c, mu_c', var_c'):
    TVSPrune's filter score, the worst-separated pair (all 45 pairs for CIFAR-10, one vectorised call).
    With ``return_pair=True`` also return the (F, 2) class indices of the minimising pair."""
    fn = resolve_score(score_fn)
    means, vars = _check_kf(means, vars)
    i, j = torch.triu_indices(means.shape[0], means.shape[0], offset=1, device=means.device)
    d = fn(means[i], vars[i], means[j], vars[j])                     # (P, F)
    best, arg = d.min(0)
    if return_pair:
        return best, torch.stack([i[arg], j[arg]], dim=-1)
    return best


__all__ = ["VAR_FLOOR", "SCORES", "tv_gaussian_1d", "tv_equal_variance", "crossings", "hellinger_gaussian",
           "hellinger_sq_gaussian", "hellinger_gaussian_diag", "tv_bounds", "mean_gap", "resolve_score",
           "pair_matrix", "pairwise_min"]

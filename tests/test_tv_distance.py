"""Exact TV and Hellinger distances between Gaussians, their bounds, and the pairwise class minimum."""
import math

import pytest
import torch

from pruning_lib.scoring.distances import (SCORES, crossings, hellinger_gaussian, hellinger_gaussian_diag,
                                     hellinger_sq_gaussian, mean_gap, pair_matrix, pairwise_min,
                                     tv_bounds, tv_equal_variance, tv_gaussian_1d)


def _random_pairs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m1 = torch.randn(n, generator=g, dtype=torch.float64) * 3
    m2 = torch.randn(n, generator=g, dtype=torch.float64) * 3
    v1 = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 1.5)
    v2 = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 1.5)
    return m1, v1, m2, v2


def _pdf(x, m, v):
    return torch.exp(-(x - m) ** 2 / (2 * v)) / torch.sqrt(2 * math.pi * v)


def _tv_numeric(m1, v1, m2, v2, points: int = 100_001):
    """1/2 int |p - q| by the trapezoid rule on a grid covering both densities (+-12 sd)."""
    s = torch.sqrt(torch.maximum(v1, v2))
    lo = torch.minimum(m1, m2) - 12 * s
    hi = torch.maximum(m1, m2) + 12 * s
    t = torch.linspace(0, 1, points, dtype=torch.float64)
    x = lo[:, None] + (hi - lo)[:, None] * t[None, :]
    diff = (_pdf(x, m1[:, None], v1[:, None]) - _pdf(x, m2[:, None], v2[:, None])).abs()
    return 0.5 * torch.trapezoid(diff, x, dim=1)


def test_bounds_hold_on_many_random_pairs():
    m1, v1, m2, v2 = _random_pairs(20_000)
    tv = tv_gaussian_1d(m1, v1, m2, v2)
    h = hellinger_gaussian(m1, v1, m2, v2)
    lower, upper = tv_bounds(h)
    assert torch.allclose(lower, hellinger_sq_gaussian(m1, v1, m2, v2))
    assert (lower <= tv + 1e-12).all()
    assert (tv <= upper + 1e-12).all()
    assert (upper <= math.sqrt(2) * h + 1e-12).all()
    assert ((tv >= 0) & (tv <= 1)).all() and ((h >= 0) & (h <= 1)).all()
    # the bounds are not vacuous: they are tight somewhere and loose somewhere
    assert (tv - lower).min() < 1e-3 and (tv - lower).max() > 0.1


def test_exact_tv_matches_numerical_integration():
    m1, v1, m2, v2 = _random_pairs(100, seed=1)
    exact = tv_gaussian_1d(m1, v1, m2, v2)
    numeric = _tv_numeric(m1, v1, m2, v2)
    assert torch.allclose(exact, numeric, atol=2e-6), (exact - numeric).abs().max()


def test_exact_tv_matches_monte_carlo():
    # TV = E_{x ~ P}[(1 - q(x)/p(x))_+], an unbiased estimate from samples of P
    g = torch.Generator().manual_seed(2)
    cases = [(0.0, 1.0, 0.0, 4.0), (0.0, 1.0, 1.0, 1.0), (1.0, 0.2, -0.5, 2.5), (3.0, 1.0, 0.0, 0.05)]
    n = 400_000
    for m1, v1, m2, v2 in cases:
        x = m1 + math.sqrt(v1) * torch.randn(n, generator=g, dtype=torch.float64)
        w = (1 - _pdf(x, torch.tensor(m2), torch.tensor(v2)) / _pdf(x, torch.tensor(m1), torch.tensor(v1))).clamp_min(0)
        est, se = w.mean().item(), w.std().item() / math.sqrt(n)
        exact = tv_gaussian_1d(torch.tensor(m1, dtype=torch.float64), v1, m2, v2).item()
        assert abs(est - exact) < 5 * se + 1e-4, (m1, v1, m2, v2, est, exact, se)


def test_equal_variance_formula_and_limits():
    d = torch.linspace(-5, 5, 41, dtype=torch.float64)
    for var in (0.3, 1.0, 7.0):
        want = 2 * torch.special.ndtr(d.abs() / (2 * math.sqrt(var))) - 1
        assert torch.allclose(tv_gaussian_1d(d, var, 0.0, var), want, atol=1e-12)
        assert torch.allclose(tv_equal_variance(d, 0.0, var), want, atol=1e-12)
    # nearly equal variances: continuous with the equal-variance case (no cancellation blow-up)
    near = tv_gaussian_1d(torch.tensor(1.0, dtype=torch.float64), 1.0, 0.0, 1.0 + 1e-10)
    assert abs(near.item() - (2 * torch.special.ndtr(torch.tensor(0.5, dtype=torch.float64)) - 1).item()) < 1e-8
    # same mean, variances 1 and 4: crossings at +-sqrt(8 ln 2 / 3), TV = 2 (Phi(r) - Phi(r/2))
    r = math.sqrt(8 * math.log(2) / 3)
    r1, r2 = crossings(0.0, 1.0, 0.0, 4.0)
    assert abs(r1.item() + r) < 1e-9 and abs(r2.item() - r) < 1e-9
    want = 2 * (0.5 * (1 + math.erf(r / math.sqrt(2))) - 0.5 * (1 + math.erf(r / 2 / math.sqrt(2))))
    assert abs(tv_gaussian_1d(0.0, 1.0, 0.0, 4.0).item() - want) < 1e-6
    # far apart -> 1, identical -> 0
    assert tv_gaussian_1d(0.0, 1.0, 100.0, 2.0).item() == pytest.approx(1.0, abs=1e-12)


def test_symmetry_and_identity():
    m1, v1, m2, v2 = _random_pairs(500, seed=3)
    for name, fn in SCORES.items():
        assert torch.allclose(fn(m1, v1, m2, v2), fn(m2, v2, m1, v1), atol=1e-12), name
        assert (fn(m1, v1, m1, v1) == 0).all(), name
    # a dead (constant) filter: zero variance is clamped, identical constants are at distance 0
    assert tv_gaussian_1d(0.5, 0.0, 0.5, 0.0).item() == 0.0
    assert tv_gaussian_1d(0.5, 0.0, 0.7, 0.0).item() == pytest.approx(1.0)


def test_hellinger_closed_form_and_diagonal():
    # 1-D: H^2 = 1 - sqrt(2 s1 s2 / (v1 + v2)) exp(-d^2 / (4 (v1 + v2)))
    m1, v1, m2, v2 = _random_pairs(100, seed=4)
    bc = torch.sqrt(2 * v1.sqrt() * v2.sqrt() / (v1 + v2)) * torch.exp(-(m1 - m2) ** 2 / (4 * (v1 + v2)))
    assert torch.allclose(hellinger_gaussian(m1, v1, m2, v2), torch.sqrt(1 - bc), atol=1e-10)
    # diagonal: BC factorises over features; compare with the general matrix formula
    M1, V1, M2, V2 = (t.view(25, 4) for t in (m1, v1, m2, v2))
    S1, S2 = torch.diag_embed(V1), torch.diag_embed(V2)
    S = (S1 + S2) / 2
    d = (M1 - M2)[..., None]
    quad = (d.transpose(-1, -2) @ torch.linalg.solve(S, d)).squeeze(-1).squeeze(-1)
    bc_mat = torch.det(S1) ** 0.25 * torch.det(S2) ** 0.25 / torch.det(S) ** 0.5 * torch.exp(-quad / 8)
    h_diag = hellinger_gaussian_diag(M1, V1, M2, V2)
    assert h_diag.shape == (25,)
    assert torch.allclose(h_diag, torch.sqrt(1 - bc_mat), atol=1e-10)
    assert torch.allclose(h_diag, hellinger_gaussian(M1, V1, M2, V2, diagonal=True))
    # the bounds hold for the diagonal case too (TV of the product measures by Monte Carlo would be
    # slow; the 1-D per-feature TV is a lower bound on the joint TV, which H^2 must not contradict)
    assert ((h_diag ** 2) <= 1).all()


def test_pairwise_min_and_matrix():
    g = torch.Generator().manual_seed(5)
    K, F = 10, 7
    means = torch.randn(K, F, generator=g, dtype=torch.float64)
    vars = torch.rand(K, F, generator=g, dtype=torch.float64) + 0.1
    for name in ("tv_exact", "hellinger_lb", "mean_gap"):
        mat = pair_matrix(name, means, vars)
        assert mat.shape == (K, K, F)
        assert torch.allclose(mat, mat.transpose(0, 1))
        assert (mat.diagonal(dim1=0, dim2=1) == 0).all()
        best, pair = pairwise_min(name, means, vars, return_pair=True)
        # brute force over the 45 pairs with a python loop
        want = torch.stack([torch.stack([SCORES[name](means[a, f], vars[a, f], means[b, f], vars[b, f])
                                         for a in range(K) for b in range(a + 1, K)]).min() for f in range(F)])
        assert torch.allclose(best, want)
        assert (pair[:, 0] < pair[:, 1]).all()
        assert torch.allclose(mat[pair[:, 0], pair[:, 1], torch.arange(F)], best)
    # a filter with two identical classes scores 0
    means[3, 2], vars[3, 2] = means[8, 2], vars[8, 2]
    assert pairwise_min("tv_exact", means, vars)[2] == 0
    assert pairwise_min(mean_gap, means, vars)[2] == 0


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="variances"):
        tv_gaussian_1d(0.0, -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        pairwise_min("tv_exact", torch.zeros(10), torch.ones(10))
    with pytest.raises(ValueError, match="unknown distance"):
        pairwise_min("kl", torch.zeros(3, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tv_bounds(torch.tensor([1.5]))


def test_dtype_follows_inputs():
    assert tv_gaussian_1d(torch.zeros(3), torch.ones(3), torch.ones(3), torch.ones(3)).dtype == torch.float32
    assert hellinger_gaussian(torch.zeros(3, dtype=torch.float64), 1.0, 1.0, 1.0).dtype == torch.float64

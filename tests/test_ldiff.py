"""LDIFF (Gini of a layer's filter scores), Spearman's rho, and a tiny random-pruning experiment."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from pruning_lib.course import data as cdata
from pruning_lib.graph import discover
from pruning_lib.course.ldiff_experiment import ldiff_experiment, single_layer_dfcs
from pruning_lib.scoring import ldiff as ldiff_module
from pruning_lib.scoring.ldiff import ldiff, normalised_scores, permutation_pvalue, rankdata, spearman
from pruning_lib.surgery import prune
from pruning_lib.course.training import evaluate


def _gini_brute(s):
    s = np.asarray(s, dtype=np.float64)
    return np.abs(s[:, None] - s[None, :]).sum() / (2 * len(s) ** 2 * s.mean())


def test_ldiff_properties_on_synthetic_scores():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(37, generator=g, dtype=torch.float64) ** 3
    assert ldiff(s) == pytest.approx(_gini_brute(s.numpy()), rel=1e-12)
    assert ldiff(s * 123.0) == pytest.approx(ldiff(s), rel=1e-12)                  # scale-free
    assert ldiff(s[torch.randperm(37, generator=g)]) == pytest.approx(ldiff(s), rel=1e-12)
    assert ldiff(torch.full((16,), 0.3)) == 0.0 and ldiff(torch.zeros(16)) == 0.0  # no mixture
    one = torch.zeros(16)
    one[5] = 2.0
    assert ldiff(one) == pytest.approx(1 - 1 / 16)                                  # one filter holds all
    # k strong filters among n weak (zero) ones: LDIFF = 1 - k/n, so it grows with the mixture
    vals = [ldiff(torch.tensor([1.0] * k + [0.0] * (20 - k))) for k in (20, 15, 10, 5, 1)]
    assert vals == pytest.approx([1 - k / 20 for k in (20, 15, 10, 5, 1)])
    assert all(a < b for a, b in zip(vals, vals[1:]))
    # a spread-out layer has higher LDIFF than a tight one around the same mean
    assert ldiff(torch.tensor([0.9, 1.0, 1.1])) < ldiff(torch.tensor([0.1, 1.0, 1.9]))
    assert normalised_scores(torch.tensor([1.0, 4.0])).tolist() == [0.25, 1.0]
    with pytest.raises(ValueError, match="non-negative"):
        ldiff(torch.tensor([0.1, -0.2]))
    with pytest.raises(ValueError, match="empty"):
        ldiff(torch.tensor([]))


def test_spearman_on_known_inputs():
    assert rankdata([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    assert rankdata([3, 1, 2]).tolist() == [3, 1, 2]
    assert spearman([1, 2, 3, 4, 5], [2, 4, 8, 16, 32]) == pytest.approx(1.0)      # monotone, not linear
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6*4/120 = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # with ties: Pearson on average ranks, worked by hand: ranks y = [1, 2, 3.5, 5, 3.5]
    rx, ry = np.array([1, 2, 3, 4, 5.0]), np.array([1, 2, 3.5, 5, 3.5])
    want = np.corrcoef(rx, ry)[0, 1]
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(want)
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2, 3], [1, 2])
    # permutation p-value: a perfect order of 8 is rare under the null (2/8! exactly), noise is not
    assert permutation_pvalue(range(8), range(8), n_perm=5000) < 0.01
    rng = np.random.default_rng(1)
    assert permutation_pvalue(rng.random(30), rng.random(30), n_perm=2000) > 0.05


def test_coupled_stream_dfcs_are_excluded_on_resnet20():
    from pruning_lib.course.models import get_model
    single, excluded = single_layer_dfcs(discover(get_model("resnet20"), (1, 3, 32, 32)))
    assert len(single) == 9 and len(excluded) == 3
    assert all(not d.coupled and len(d.A) == 1 and d.A[0].endswith("conv1") for d in single)


class Plain(nn.Module):
    """Four conv-BN-ReLU layers, each alone in its DFC (no residuals)."""

    def __init__(self):
        super().__init__()
        chans = [3, 8, 12, 12, 16]
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _colour_split(per_class: int, seed: int) -> cdata.CIFAR10Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat_interleave(per_class)
    base = torch.stack([torch.tensor([(c * 97) % 256, (c * 53 + 80) % 256, (c * 29 + 160) % 256]) for c in range(10)])
    x = base[y].float()[:, :, None, None] + 30 * torch.randn(len(y), 3, 16, 16, generator=g)
    return cdata.CIFAR10Split(f"colour{seed}", x.clamp(0, 255).to(torch.uint8), y, "synthetic")


def test_tiny_experiment_measures_real_drops():
    torch.manual_seed(0)
    model = Plain()
    train = _colour_split(20, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(30):                      # a few full-batch steps: colour classes are easy
        for x, y in cdata.batches(train, 100, shuffle=True, generator=torch.Generator().manual_seed(_)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats_split, eval_split = _colour_split(8, seed=2), _colour_split(10, seed=3)
    r = ldiff_experiment(model, "plain", fraction=0.5, seeds=(0, 1), stats_split=stats_split,
                         eval_split=eval_split, eval_images=None, input_shape=(1, 3, 16, 16))
    assert [row.layer for row in r.rows] == ["features.0", "features.3", "features.6", "features.9"]
    assert [row.bn for row in r.rows] == ["features.1", "features.4", "features.7", "features.10"]
    assert [row.pruned for row in r.rows] == [4, 6, 6, 8] and r.excluded == []
    assert r.base_accuracy == pytest.approx(evaluate(model, eval_split))
    assert r.base_accuracy > 50                                         # it learned the colours
    for row in r.rows:
        assert 0 <= row.ldiff < 1 and len(row.drops) == 2
        assert row.mean_drop == pytest.approx(np.mean(row.drops))
    # the drops are real: redo one prune by hand with the experiment's seeding and compare
    graph = discover(model, (1, 3, 16, 16))
    row = r.rows[2]
    dfc = graph.dfcs[row.dfc]
    chans = torch.randperm(dfc.channels, generator=torch.Generator().manual_seed(10_007 * 1 + dfc.index))[:row.pruned]
    by_hand = r.base_accuracy - evaluate(prune(model, graph, {dfc: chans.tolist()}), eval_split)
    assert row.drops[1] == pytest.approx(by_hand)
    assert r.spearman == pytest.approx(spearman([x.ldiff for x in r.rows], [x.mean_drop for x in r.rows]))
    assert 0 < r.p_value <= 1
    for k, v in model.state_dict().items():                             # caller's model untouched
        assert torch.equal(v, before[k]), k
    assert "Spearman" in r.table() and len(r.frame()) == 4
    ax = r.plot()                                  # no course stage in these layer names: all "stem"
    assert ax.get_title().startswith("plain: Spearman") and [t.get_text() for t in ax.get_legend().get_texts()] == ["stem"]
    with pytest.raises(ValueError, match="fraction"):
        ldiff_experiment(model, fraction=1.0, stats_split=stats_split, eval_split=eval_split)
    with pytest.raises(ValueError, match="single-layer"):
        ldiff_experiment(model, layers=["fc"], stats_split=stats_split, eval_split=eval_split,
                         input_shape=(1, 3, 16, 16))


def test_the_metric_module_holds_only_the_metric():
    """scoring.ldiff is the statistic; the experiment on the course's networks lives in the course."""
    assert set(ldiff_module.__all__) == {"ldiff", "normalised_scores", "rankdata", "spearman", "permutation_pvalue"}
    assert not hasattr(ldiff_module, "ldiff_experiment") and not hasattr(ldiff_module, "LdiffResult")

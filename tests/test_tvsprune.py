"""TVSPrune / IterTVSPrune (pruning_lib.pruning.tvsprune) on a small residual CNN trained on coloured images."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import make_images
from pruning_lib.course import data as cdata
import pruning_lib as pl
from pruning_lib.pruning import tvsprune
from pruning_lib.scoring import tvs
from pruning_lib.scoring.tvs import STREAM_REDUCE
from pruning_lib.graph import discover
from pruning_lib.measure import count_parameters
from pruning_lib.surgery import predicted_parameters
from pruning_lib.course.training import evaluate


class ToyRes(nn.Module):
    """Stem, one residual block (a coupled stream: stem + conv2 write it), a strided conv, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.b_conv1 = nn.Conv2d(12, 12, 3, 1, 1, bias=False)
        self.b_bn1 = nn.BatchNorm2d(12)
        self.b_conv2 = nn.Conv2d(12, 12, 3, 1, 1, bias=False)
        self.b_bn2 = nn.BatchNorm2d(12)
        self.conv3 = nn.Conv2d(12, 16, 3, 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        s = torch.relu(self.bn1(self.conv1(x)))
        r = self.b_bn2(self.b_conv2(torch.relu(self.b_bn1(self.b_conv1(s)))))
        s = torch.relu(s + r)
        y = torch.relu(self.bn3(self.conv3(s)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _split(name, n_per_class, seed):
    x, y = make_images(n_per_class, "colour", seed)
    return cdata.CIFAR10Split(name, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y), "synthetic")


@pytest.fixture(scope="module")
def toy():
    """A trained ToyRes and its dist / val / test splits (coloured classes, 20 / 20 / 20 per class)."""
    torch.manual_seed(0)
    train = _split("train", 30, 11)
    model = ToyRes()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        for x, y in cdata.batches(train, 50, shuffle=True, generator=g):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    return model, _split("dist", 20, 12), _split("val", 20, 13), _split("test", 20, 14)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_toy_is_trained(toy):
    model, dist, val, _ = toy
    assert evaluate(model, val) >= 80.0


def test_scores_cover_every_dfc_including_the_coupled_stream(toy):
    model, dist, _, _ = toy
    graph = discover(model, (1, 3, 32, 32))
    assert graph.num_coupled >= 1
    scores = pl.tvs_scores(model, graph, data=dist)
    for d in graph.dfcs:
        s = scores[d]
        assert s.shape == (d.channels,) and torch.isfinite(s).all() and (s >= 0).all()
    stream = next(d for d in graph.dfcs if len(d.feed_in) > 1)
    means = {r: pl.tvs_scores(model, graph, data=dist, stream_reduce=r)[stream] for r in STREAM_REDUCE}
    assert (means["min"] <= means["mean"] + 1e-12).all() and (means["mean"] <= means["max"] + 1e-12).all()
    with pytest.raises(ValueError, match="stream_reduce"):
        pl.tvs_scores(model, graph, data=dist, stream_reduce="median")


def test_bn_and_stream_sites_share_one_forward_pass_per_batch(toy):
    """Both kinds of score site are fed by the same pass (one model call per batch), and the BN sites'
    scores are exactly those of the class statistics taken on their own."""
    model, dist, _, _ = toy
    graph = discover(model, (1, 3, 32, 32))
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    try:
        scores = pl.tvs_scores(model, graph, data=dist, batch_size=64)
    finally:
        h.remove()
    assert calls == [64] * (len(dist) // 64) + ([len(dist) % 64] if len(dist) % 64 else [])
    bn_dfcs = {d: tvs._bn_site(d) for d in graph.dfcs if tvs._bn_site(d)}
    assert bn_dfcs and len(bn_dfcs) < len(graph.dfcs)          # both kinds present
    alone = pl.filter_scores(pl.collect_statistics(model, dist, modules=sorted(set(bn_dfcs.values())), batch_size=64))
    for d, bn in bn_dfcs.items():
        assert torch.equal(scores[d], alone[bn])


def test_one_shot_follows_the_eps_rule_and_shrinks_physically(toy):
    model, dist, _, _ = toy
    before = _state(model)
    graph = discover(model, (1, 3, 32, 32))
    scores = pl.tvs_scores(model, graph, data=dist)
    res = pl.tvs_prune(model, 0.5, data=dist, graph=graph, scores=scores)
    for d in graph.dfcs:
        s = scores[d]
        n = s / s.max()
        expected = torch.nonzero(n <= 0.5 * n.mean()).flatten().tolist()      # the released rule
        assert res.removals().get(d, []) == expected
        assert res.removed.get(tuple(sorted(d.A)), []) == expected
    assert res.channels_removed > 0
    assert res.parameters_after == count_parameters(res.model) < count_parameters(model)
    assert res.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert _same(before, model.state_dict())


def test_one_shot_never_empties_a_dfc(toy):
    model, dist, _, _ = toy
    graph = discover(model, (1, 3, 32, 32))
    res = pl.tvs_prune(model, 1e6, data=dist, graph=graph)
    for d in graph.dfcs:
        assert len(res.removals().get(d, [])) == d.channels - 1
    assert res.model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_iterative_reaches_the_target_without_overshooting(toy):
    model, dist, val, _ = toy
    before = _state(model)
    p0 = count_parameters(model)
    res = pl.iter_tvs_prune(model, pl.Target(parameters=0.12), data=dist, evaluate=val, max_step=0.05)
    assert "target" in res.stop_reason
    assert res.sparsity <= 0.12 + 1e-12                      # never more than the target
    graph = discover(model, (1, 3, 32, 32))
    biggest = max(p0 - predicted_parameters(model, graph, {d: [0]}) for d in graph.dfcs)
    assert res.sparsity >= 0.12 - biggest / p0               # within one channel of it
    assert res.parameters_after == count_parameters(res.model)
    # per-step report: one accepted step per row, monotone parameters, val accuracy recorded
    steps = res.report.steps
    assert len(steps) >= 3 and res.report.accuracy_split == "val"      # max_step forces several steps
    assert all(a.parameters > b.parameters for a, b in zip(steps, steps[1:]))
    assert all(s.accuracy is not None for s in steps)
    assert _same(before, model.state_dict())                 # the caller's model is untouched


def test_scores_are_re_estimated_on_the_current_model(toy, monkeypatch):
    model, dist, val, _ = toy
    seen = []
    real = pl.tvs_scores

    def spy(m, *a, **k):
        seen.append(count_parameters(m))
        return real(m, *a, **k)

    monkeypatch.setattr(tvsprune, "tvs_scores", spy)
    res = pl.iter_tvs_prune(model, pl.Target(parameters=0.12), data=dist, evaluate=val, max_step=0.04)
    accepted = [s.parameters for s in res.report.steps]
    assert len(seen) >= len(accepted) - 1 >= 2
    assert seen[:len(accepted)] == accepted[:len(seen)]      # each estimate on the model of that step
    assert len(set(seen)) == len(seen)                       # never twice on the same (unchanged) model


def test_accuracy_gate_uses_val_never_test(toy, monkeypatch):
    model, dist, val, test = toy
    used = []
    import pruning_lib.measure.accuracy as accuracy      # what a split given as the gate is measured with
    real = accuracy.evaluate

    def spy(m, split, *a, **k):
        used.append(split.name if hasattr(split, "name") else split)
        return real(m, split, *a, **k)

    monkeypatch.setattr(accuracy, "evaluate", spy)
    pl.iter_tvs_prune(model, pl.Target(accuracy_drop=5.0), data=dist, evaluate=val, max_iterations=4)
    assert used and set(used) == {"val"}
    with pytest.raises(ValueError, match="test split"):
        pl.iter_tvs_prune(model, pl.Target(parameters=0.1), data=dist, evaluate=test)


def test_terminates_when_every_step_is_rejected(toy):
    model, dist, val, _ = toy
    res = pl.iter_tvs_prune(model, pl.Target(min_accuracy=60.0), data=dist, evaluate=lambda m: 50.0, eps0=0.5, eps_step=0.1)
    assert res.stop_reason in ("eps reached 0",) or res.stop_reason.startswith("no channel")
    assert res.sparsity == 0.0 and len(res.report.steps) == 1
    assert res.iterations <= 5 and not any(a.accepted for a in res.attempts)


def test_terminates_with_an_accuracy_floor_only(toy):
    model, dist, val, _ = toy
    res = pl.iter_tvs_prune(model, pl.Target(accuracy_drop=100.0), data=dist, evaluate=val, eps0=0.5, max_iterations=50)
    assert res.iterations < 50 and res.stop_reason.startswith("no channel")   # ran out of candidates
    assert res.sparsity > 0


def test_bad_arguments_are_refused(toy):
    model, dist, val, _ = toy
    with pytest.raises(ValueError, match="give a target"):
        pl.iter_tvs_prune(model, pl.Target(), data=dist, evaluate=val)
    with pytest.raises(ValueError, match="fraction"):
        pl.iter_tvs_prune(model, pl.Target(parameters=3.5), data=dist, evaluate=val)
    with pytest.raises(ValueError, match="eps"):
        pl.tvs_prune(model, 0.0, data=dist)


def _with_bn_stats_shifted(model, mean_shift, var_scale=1.0):
    """A copy of ``model`` whose BN running means are shifted and variances scaled."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(mean_shift)
            m.running_var.mul_(var_scale)
    return out


def test_bn_recalibration_restores_corrupted_statistics(toy):
    model, dist, val, _ = toy
    broken = _with_bn_stats_shifted(model, 0.5, 3.0)
    kept = _state(broken)
    fixed = pl.bn_recalibrate(broken, data=dist, augment=False)
    assert _same(kept, broken.state_dict())                  # not in place unless asked
    bn_b, bn_f = dict(broken.named_modules()), dict(fixed.named_modules())
    for name, m in bn_f.items():
        if isinstance(m, nn.BatchNorm2d):
            assert not torch.allclose(m.running_mean, bn_b[name].running_mean)
            assert m.momentum == bn_b[name].momentum and not m.training
    acc_broken, acc_fixed = evaluate(broken, val), evaluate(fixed, val)
    assert acc_fixed >= acc_broken and acc_fixed >= evaluate(model, val) - 5.0


def test_bn_recalibration_keeps_accuracy_after_pruning(toy):
    model, dist, val, _ = toy
    res = pl.iter_tvs_prune(model, pl.Target(parameters=0.15), data=dist, evaluate=val)
    fixed = pl.bn_recalibrate(res.model, data=dist, passes=1)
    assert evaluate(fixed, val) >= evaluate(res.model, val) - 2.0
    same = pl.bn_recalibrate(res.model, data=dist, inplace=True, augment=False)
    assert same is res.model


def test_bn_mean_recalibration_fixes_means_and_keeps_trained_variances(toy):
    model, dist, val, _ = toy
    shifted = _with_bn_stats_shifted(model, 0.5)
    fixed = pl.bn_recalibrate(shifted, data=dist, augment=False, variance=False)
    full = pl.bn_recalibrate(shifted, data=dist, augment=False)
    bn_s, bn_f, bn_full = (dict(x.named_modules()) for x in (shifted, fixed, full))
    for name, m in bn_f.items():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.running_var, bn_s[name].running_var)           # trained variances kept
            assert torch.equal(m.running_mean, bn_full[name].running_mean)      # same means as a full pass
            assert not torch.allclose(m.running_var, bn_full[name].running_var)
    assert evaluate(fixed, val) >= evaluate(shifted, val)


def test_baselines_at_the_same_sparsity(toy):
    model, dist, _, _ = toy
    graph = discover(model, (1, 3, 32, 32))
    for crit in ("l1", "random"):
        res = pl.prune_to_sparsity(model, pl.Target(parameters=0.1), criterion=crit, graph=graph)
        assert 0 < res.sparsity <= 0.1 + 1e-12
        assert res.parameters_after == count_parameters(res.model)
        assert res.channels_removed == sum(len(c) for c in res.removals().values()) > 0
    with pytest.raises(ValueError, match="unknown criterion"):
        pl.prune_to_sparsity(model, pl.Target(parameters=0.1), criterion="l2", graph=graph)
    with pytest.raises(TypeError, match="flops"):
        pl.prune_to_sparsity(model, pl.Target(flops=0.1), criterion="l1", graph=graph)

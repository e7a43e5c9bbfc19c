"""Repair without the training set (pruning_lib.repair, ModHiFi-P): the fidelity statistics of eq. (3)
against brute force, the per-channel rule, delta* of Proposition 3.8, the least-squares refit, the
streaming Gram, the bias fold, and prune_and_repair end to end. Tiny float64 models."""
from __future__ import annotations

import copy

import pytest

from pruning_lib.scoring import list_criteria
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib.graph import discover
from pruning_lib.pruning import Target, bn_recalibrate, global_prune
from pruning_lib.repair import (PatchMoments, compensate, delta_closed_form, delta_star, fidelity_statistics,
                                hifi_removals, hifi_scores, least_squares_refit, prune_and_repair,
                                repair_pruned)
from pruning_lib.scoring import get_criterion
from pruning_lib.surgery import prune
from toy_models import randomised

SHAPE = (1, 3, 8, 8)


class TinyRes(nn.Module):
    """A stem, one residual block (a coupled stream read by conv_a and conv_c), a 1x1 conv with bias, an fc."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv_a, self.bn_a = nn.Conv2d(6, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
        self.conv_b, self.bn_b = nn.Conv2d(5, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv_c = nn.Conv2d(6, 4, 1, bias=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        h = torch.relu(self.bn_a(self.conv_a(s)))
        s = torch.relu(s + self.bn_b(self.conv_b(h)))
        y = torch.relu(self.conv_c(s))
        return self.fc(y.mean((2, 3)))


def _inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    return base + 0.5 * base.roll(1, dims=1)                  # correlated colour channels


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return randomised(TinyRes(), seed=3)


@pytest.fixture(scope="module")
def data():
    return _inputs(40, seed=1)


def _capture(model, name, x, what="input"):
    got = {}
    m = model.get_submodule(name)

    def keep(mod, i, o):
        got.setdefault("v", i[0] if what == "input" else o)     # returns None: the output stays as it is

    h = m.register_forward_hook(keep)
    with torch.no_grad():
        model(x)
    h.remove()
    return got["v"]


def _contributions(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A_ci for every (c, i) by brute force: (N, C_out, C_in, H, W)."""
    return torch.stack([conv._conv_forward(x[:, i:i + 1], conv.weight[:, i:i + 1], None)
                        for i in range(conv.in_channels)], dim=2)


# --------------------------------------------------------------------------- fidelity (eq. 3)

@pytest.mark.parametrize("centre", [False, True])
def test_fidelity_statistics_match_brute_force(net, data, centre):
    g = discover(net, SHAPE)
    loader = DataLoader(TensorDataset(data), batch_size=7)                 # several uneven batches
    stats = fidelity_statistics(net, g, loader, centre=centre)
    for name in ("conv_b", "conv_a", "fc"):
        layer = net.get_submodule(name)
        x = _capture(net, name, data)
        with torch.no_grad():
            a = _contributions(layer, x) if name != "fc" else (x[:, None, :] * layer.weight[None])[..., None, None]
        if centre:
            a = a - a.mean((0, 3, 4), keepdim=True)
        y = a.sum(2)
        n = len(data)
        r = torch.einsum("nchw,ncihw->ci", y, a) / n
        q = (a ** 2).sum((3, 4)).mean(0)
        energy = (y ** 2).sum((2, 3)).mean(0)
        alpha = torch.where(q > 0, r / q, torch.zeros_like(r))          # a dead input (q = 0): alpha = s = 0
        # s by its definition: 1 - E||Y_c - alpha A_ci||^2 / E||Y_c||^2
        s = 1 - ((y[:, :, None] - alpha[None, :, :, None, None] * a) ** 2).sum((3, 4)).mean(0) / energy[:, None]
        s = torch.where(q > 0, s, torch.zeros_like(s))
        st = stats[name]
        torch.testing.assert_close(st.saliency, r, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(st.contribution, q, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(st.energy, energy, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(st.alpha, alpha, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(st.fidelity, s, rtol=1e-8, atol=1e-10)
        assert st.samples == n


def test_hifi_rule_is_the_union_over_readers_and_output_channels(net, data):
    g = discover(net, SHAPE)
    sc = hifi_scores(net, g, data=data, score="fidelity")
    for dfc in g.dfcs:
        want = torch.zeros(dfc.channels, dtype=torch.float64)
        for ref in dfc.feed_out:
            s = sc.readers[ref.module].fidelity
            for c in range(s.shape[0]):
                for k in range(dfc.channels):
                    rank = int((s[c] <= s[c, ref.offset + k]).sum()) / s.shape[1]
                    want[k] = max(want[k], rank)
        torch.testing.assert_close(sc.percentile[dfc], want)
        order = torch.argsort(sc.scores[dfc])
        assert torch.all(sc.percentile[dfc][order].diff() >= 0)          # ties broken inside one percentile
    # Algorithm 2 at a threshold: pruned iff in no output channel's top (1 - tau) of any reader
    rem = hifi_removals(sc, tau=0.7)
    for dfc in g.dfcs:
        assert set(rem.get(dfc, [])) == {k for k in range(dfc.channels) if sc.percentile[dfc][k] < 0.7} or \
            len(rem.get(dfc, [])) == dfc.channels - 1


def test_a_silenced_channel_scores_zero_and_goes_first(net, data):
    model = copy.deepcopy(net)
    with torch.no_grad():                  # channel 2 of conv_a -> conv_b is exactly 0 after the ReLU
        model.bn_a.weight[2] = 0
        model.bn_a.bias[2] = -1
    g = discover(model, SHAPE)
    sc = hifi_scores(model, g, data=data, score="fidelity")
    inner = g.dfc_of("conv_a", "feed_in")[0]
    assert torch.all(sc.readers["conv_b"].fidelity[:, 2] == 0)
    assert torch.all(sc.readers["conv_b"].saliency[:, 2] == 0)
    assert int(torch.argmin(sc.scores[inner])) == 2


def test_hifi_is_a_criterion_for_global_prune(net, data):
    assert "hifi" in list_criteria()                         # registered on import, as every criterion
    assert get_criterion("hifi") is hifi_scores
    before = copy.deepcopy(net.state_dict())
    loader = DataLoader(TensorDataset(data, torch.zeros(len(data), dtype=torch.long)), batch_size=16)
    r = global_prune(net, Target(channels=0.3), criterion="hifi", data=loader, input_shape=SHAPE, step_fraction=0.1,
                     progress=False)
    assert r.scores.method == "hifi" and r.report.final.channels_removed > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="needs data="):
        hifi_scores(net, discover(net, SHAPE))


# --------------------------------------------------------------------------- streaming moments

def test_gram_accumulated_over_batches_equals_one_batch():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(23, 4, 9, 5, generator=g, dtype=torch.float64)
    y = torch.randn(23, 3, 5, generator=g, dtype=torch.float64)
    whole, parts = PatchMoments(4, 9, 3), PatchMoments(4, 9, 3)
    whole.add(p, y)
    for s in range(0, 23, 6):
        parts.add(p[s:s + 6], y[s:s + 6])
    for f in ("psum", "ysum", "y2sum", "cross", "gram"):
        torch.testing.assert_close(getattr(parts, f), getattr(whole, f), rtol=1e-12, atol=1e-12)
    flat = p.reshape(23, 36, 5).transpose(1, 2).reshape(-1, 36)
    torch.testing.assert_close(whole.gram, flat.T @ flat)
    assert whole.rows == parts.rows == 23 * 5
    diag = PatchMoments(4, 9, 3, full_gram=False)
    diag.add(p, y)
    torch.testing.assert_close(diag.diag_blocks(), whole.diag_blocks())


@pytest.mark.parametrize("intercept", [False, True])
def test_least_squares_refit_equals_lstsq_with_ridge(intercept):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    x = x + 0.3
    y = x @ torch.randn(6, 2, generator=g, dtype=torch.float64) + 0.1 * torch.randn(200, 2, generator=g,
                                                                                    dtype=torch.float64) + 2.0
    m = PatchMoments(6, 1, 2)
    for s in range(0, 200, 64):
        m.add(x[s:s + 64, :, None, None], y[s:s + 64, :, None])
    w, b, lam = least_squares_refit(m, ridge=1e-2, intercept=intercept)
    assert lam > 0
    xc, yc = (x - x.mean(0), y - y.mean(0)) if intercept else (x, y)
    a = torch.cat([xc, lam ** 0.5 * torch.eye(6, dtype=torch.float64)])
    want = torch.linalg.lstsq(a, torch.cat([yc, torch.zeros(6, 2, dtype=torch.float64)])).solution.T
    torch.testing.assert_close(w, want, rtol=1e-8, atol=1e-10)
    if intercept:
        torch.testing.assert_close(b, y.mean(0) - w @ x.mean(0), rtol=1e-8, atol=1e-10)
    else:
        assert b is None


# --------------------------------------------------------------------------- compensation

def test_delta_star_is_proposition_3_8_and_lowers_the_error(net, data):
    g = discover(net, SHAPE)
    inner = g.dfc_of("conv_a", "feed_in")[0]                 # conv_a -> conv_b, one reader
    removals = {inner: [1, 3]}
    kept = [0, 2, 4]
    pruned = prune(net, g, removals)
    res = compensate(pruned, net, g, removals, data, method="delta", ridge=0.0, intercept=False)
    (rec,) = res.layers
    assert rec.name == "conv_b" and rec.method == "delta" and rec.shift_into == ""
    x = _capture(net, "conv_b", data)                        # kept inputs are unchanged by this prune
    with torch.no_grad():
        a = _contributions(net.conv_b, x)
    q = torch.einsum("ncihw,ncjhw->cij", a, a) / len(data)
    w_old, w_new = pruned.conv_b.weight.detach(), res.model.conv_b.weight.detach()
    for c in range(6):
        delta = delta_closed_form(q[c], kept)
        assert torch.all(delta[[1, 3]] == 0)
        torch.testing.assert_close(w_new[c], delta[kept][:, None, None] * w_old[c], rtol=1e-8, atol=1e-10)
    # the error on the samples, measured directly, falls and equals the recorded one
    y = _capture(net, "conv_b", data, "output")
    xk = x[:, kept]
    with torch.no_grad():
        err_before = ((pruned.conv_b(xk) - y) ** 2).sum()
        err_after = ((res.model.conv_b(xk) - y) ** 2).sum()
    var = ((y - y.mean((0, 2, 3), keepdim=True)) ** 2).sum()
    assert err_after < err_before
    assert rec.error_after == pytest.approx(float(err_after / var), rel=1e-8)
    assert rec.error_before == pytest.approx(float(err_before / var), rel=1e-8)
    # nothing removed from a reader's inputs: delta = 1
    torch.testing.assert_close(delta_closed_form(q[0], list(range(5))), torch.ones(5, dtype=torch.float64))


def test_delta_star_for_a_1x1_conv_is_the_least_squares_refit():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(30, 4, 3, 3, generator=g, dtype=torch.float64)
    conv = nn.Conv2d(4, 3, 1, bias=False).double()
    y = conv(x).detach() + 0.2 * torch.randn(30, 3, 3, 3, generator=g, dtype=torch.float64)
    m = PatchMoments(4, 1, 3)
    m.add(x.flatten(2)[:, :, None, :], y.flatten(2))
    delta, _, _ = delta_star(m, conv.weight.detach().view(3, 4, 1), ridge=0.0, intercept=False)
    w, _, _ = least_squares_refit(m, ridge=0.0, intercept=False)
    torch.testing.assert_close(delta * conv.weight.detach().view(3, 4), w, rtol=1e-8, atol=1e-10)


def _linear_pair(kind: str) -> nn.Module:
    torch.manual_seed(4)
    if kind == "conv":
        model = nn.Sequential(nn.Conv2d(3, 5, 1, bias=False), nn.Conv2d(5, 2, 1), nn.ReLU())
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Linear(5, 2), nn.ReLU())
    model = model.double().eval()
    with torch.no_grad():                                     # channel 4 = channel 0 + 2 channel 1 - channel 3
        w = model[1 if kind == "linear" else 0].weight
        w[4] = w[0] + 2 * w[1] - w[3]
        if kind == "linear":
            model[1].bias[4] = model[1].bias[0] + 2 * model[1].bias[1] - model[1].bias[3]
    return model


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_refit_reconstructs_exactly_a_removed_linear_combination(kind):
    model = _linear_pair(kind)
    shape = (1, 3, 2, 2)
    g = discover(model, shape)
    dfc = g.dfc_of("1" if kind == "linear" else "0", "feed_in")[0]
    x = torch.randn(50, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pruned = prune(model, g, {dfc: [4]})
    res = compensate(pruned, model, g, {dfc: [4]}, x, ridge=0.0)
    (rec,) = res.layers
    assert rec.method == "lstsq" and rec.error_before > 1e-3 and rec.error_after < 1e-12
    x_new = torch.randn(7, 3, 2, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x_new), model(x_new), rtol=1e-9, atol=1e-9)
        assert not torch.allclose(pruned(x_new), model(x_new))


def test_compensation_refit_equals_lstsq_on_stored_pruned_activations(net, data):
    g = discover(net, SHAPE)
    stream = g.dfc_of("stem", "feed_in")[0]                  # read by conv_a (3x3) and conv_c (1x1, bias)
    removals = {stream: [0, 4]}
    pruned = prune(net, g, removals)
    res = compensate(pruned, net, g, removals, DataLoader(TensorDataset(data), batch_size=9), ridge=1e-3)
    rec = {r.name: r for r in res.layers}
    assert rec["conv_a"].method == "delta" and rec["conv_c"].method == "lstsq"
    assert rec["conv_c"].shift_into == "bias" and rec["conv_a"].shift_into == "bn_a.running_mean"
    # conv_c was refitted on its input in the compensated network (conv_a refitted first) ...
    x = _capture(res.model, "conv_c", data).permute(0, 2, 3, 1).reshape(-1, 4)
    y = _capture(net, "conv_c", data, "output").permute(0, 2, 3, 1).reshape(-1, 4)
    lam = rec["conv_c"].lam
    xc, yc = x - x.mean(0), y - y.mean(0)
    a = torch.cat([xc, lam ** 0.5 * torch.eye(4, dtype=torch.float64)])
    want = torch.linalg.lstsq(a, torch.cat([yc, torch.zeros(4, 4, dtype=torch.float64)])).solution.T
    torch.testing.assert_close(res.model.conv_c.weight.detach().view(4, 4), want, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(res.model.conv_c.bias.detach(), y.mean(0) - want @ x.mean(0), rtol=1e-7, atol=1e-9)
    # ... and conv_a's constant went into bn_a's running mean, exactly: the error it reports is the real one
    xa = _capture(res.model, "conv_a", data)
    ya = _capture(net, "conv_a", data, "output")
    shift = (pruned.bn_a.running_mean - res.model.bn_a.running_mean).view(1, -1, 1, 1)
    with torch.no_grad():
        err = ((res.model.conv_a(xa) + shift - ya) ** 2).sum()
    var = ((ya - ya.mean((0, 2, 3), keepdim=True)) ** 2).sum()
    assert rec["conv_a"].error_after == pytest.approx(float(err / var), rel=1e-8)
    assert all(r.error_after < r.error_before for r in res.layers)
    # the pruned model given was copied, the reference untouched
    assert torch.equal(pruned.conv_c.weight, prune(net, g, removals).conv_c.weight)


# --------------------------------------------------------------------------- prune_and_repair

def _output_mse(a, b, x):
    with torch.no_grad():
        return float(((a(x) - b(x)) ** 2).mean())


def test_prune_and_repair_improves_fidelity_and_leaves_the_caller_alone(net):
    calib = _inputs(64, seed=11)
    held = _inputs(64, seed=12)
    loader = DataLoader(TensorDataset(calib, torch.zeros(64, dtype=torch.long)), batch_size=16)
    model = bn_recalibrate(net, data=loader)                      # BN statistics of this input distribution
    model.conv_c.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mse = {}
    for reps in [(), ("compensation",), ("bn", "compensation")]:
        r = prune_and_repair(model, Target(channels=0.35), criterion="l1", data=loader, repairs=reps, step_fraction=0.2,
                             input_shape=SHAPE, progress=False)
        assert r.report.final.channels_removed > 0 and r.accepted_step == len(r.report.steps) - 1
        assert r.report.info["repairs"] == list(reps)
        mse[reps] = _output_mse(r.model, model, held)
        if "compensation" in reps:
            assert r.compensation[r.accepted_step]
    assert mse[("compensation",)] < mse[()]
    assert mse[("bn", "compensation")] < mse[()]
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not model.training and model.conv_c.weight.requires_grad is False and model.stem.weight.requires_grad


def test_bn_repair_re_estimates_the_means_and_keeps_the_variances_unless_asked(net):
    """The default BN repair replaces the running means only (docs/repair.md, choice 10); with
    bn_variance=True the variances are re-estimated too, as bn_recalibrate does on the same samples."""
    loader = DataLoader(TensorDataset(_inputs(64, seed=13), torch.zeros(64, dtype=torch.long)), batch_size=16)
    g = discover(net, SHAPE)
    removals = {g.dfcs[0]: [0]}
    pruned = prune(net, g, removals)
    for variance in (False, True):
        fixed, _ = repair_pruned(net, g, removals, loader, repairs=("bn",), bn_variance=variance)
        want = bn_recalibrate(pruned, data=loader, variance=variance)
        for m, ref, old in zip(_bns(fixed), _bns(want), _bns(pruned)):
            torch.testing.assert_close(m.running_mean, ref.running_mean)
            torch.testing.assert_close(m.running_var, (ref if variance else old).running_var)
        assert any(not torch.equal(m.running_var, old.running_var)
                   for m, old in zip(_bns(fixed), _bns(pruned))) == variance
    default, _ = repair_pruned(net, g, removals, loader, repairs=("bn",))
    assert all(torch.equal(m.running_var, old.running_var) for m, old in zip(_bns(default), _bns(pruned)))
    with pytest.raises(ValueError, match="contradicts bn_variance"):
        repair_pruned(net, g, removals, loader, repairs=("bn",), bn_kwargs={"variance": True})


def _bns(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_prune_and_repair_refuses_bad_requests(net):
    with pytest.raises(ValueError, match="repairs"):
        prune_and_repair(net, Target(channels=0.2), criterion="l1", data=_inputs(8, 0), repairs=("finetune",), progress=False)
    with pytest.raises(ValueError, match="need data="):
        prune_and_repair(net, Target(channels=0.2), criterion="l1", progress=False)


def test_simultaneous_compensation_reads_the_uncompensated_pruned_input(net, data):
    g = discover(net, SHAPE)
    stream = g.dfc_of("stem", "feed_in")[0]
    removals = {stream: [0, 4]}
    pruned = prune(net, g, removals)
    res = compensate(pruned, net, g, removals, data, ridge=0.0, sequential=False)
    x = _capture(pruned, "conv_c", data).permute(0, 2, 3, 1).reshape(-1, 4)      # conv_a not yet refitted
    y = _capture(net, "conv_c", data, "output").permute(0, 2, 3, 1).reshape(-1, 4)
    xc, yc = x - x.mean(0), y - y.mean(0)
    want = torch.linalg.lstsq(xc, yc).solution.T
    torch.testing.assert_close(res.model.conv_c.weight.detach().view(4, 4), want, rtol=1e-7, atol=1e-9)


class _Gate(nn.Module):
    def forward(self, y):
        return y / 2 if float(y.sum()) > 1e30 else y           # branches on a value: torch.fx cannot trace it


class _UntraceableRes(TinyRes):
    """TinyRes ending in a module torch.fx cannot trace (discover is told it is a leaf; compensate is not)."""

    def __init__(self):
        super().__init__()
        self.gate = _Gate()

    def forward(self, x):
        return self.gate(super().forward(x))


@pytest.mark.parametrize("arch", ["tiny", "resnet20", "untraceable"])
def test_one_pass_sequential_compensation_equals_a_pass_per_reader(net, data, arch):
    """The node-by-node pass (every batch at once) refits exactly what one forward pass per reader
    refits; a network torch.fx cannot trace gets the per-reader passes."""
    if arch == "resnet20":
        from pruning_lib.course.models.cifar_resnet import resnet20
        model = randomised(resnet20().double(), seed=5).eval()
        shape, x = (1, 3, 32, 32), torch.randn(24, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    else:
        model = net if arch == "tiny" else randomised(_UntraceableRes(), seed=3)
        shape, x = SHAPE, data
    g = discover(model, shape, leaf_modules=["gate"] if arch == "untraceable" else ())
    removals = {d: [0] for d in g.dfcs[::2]}
    pruned = prune(model, g, removals)
    one = compensate(pruned, model, g, removals, x, batch_size=10, one_pass=True)
    per = compensate(pruned, model, g, removals, x, batch_size=10, one_pass=False)
    assert [r.name for r in one.layers] == [r.name for r in per.layers] and len(one.layers) > 1
    for a, b in zip(one.model.state_dict().values(), per.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert [r.error_after for r in one.layers] == pytest.approx([r.error_after for r in per.layers], rel=1e-9)


def test_compensation_names_an_overflow_instead_of_a_solver_failure(net, data):
    g = discover(net, SHAPE)
    stream = g.dfc_of("stem", "feed_in")[0]
    with pytest.raises(FloatingPointError, match="inf or NaN"):
        compensate(prune(net, g, {stream: [0]}), net, g, {stream: [0]}, data * float("inf"))


def test_unlabelled_data_sources_and_their_errors(net, data):
    from pruning_lib.repair import RepairDataError, iter_inputs
    batches = list(iter_inputs(DataLoader(TensorDataset(data), batch_size=16), limit=20))
    assert [len(b) for b in batches] == [16, 4]
    assert [len(b) for b in iter_inputs(data, batch_size=15)] == [15, 15, 10]
    with pytest.raises(RepairDataError, match="one-shot iterator"):
        list(iter_inputs(iter([data])))
    with pytest.raises(RepairDataError, match="data=None"):
        list(iter_inputs(None))
    with pytest.raises(RepairDataError, match="not an input tensor"):
        list(iter_inputs([["a", "b"]]))


def test_prune_and_repair_stops_at_an_accuracy_drop_and_reports_each_step(net):
    calib = _inputs(32, seed=11)
    held = _inputs(32, seed=12)
    with torch.no_grad():
        out = net(held)
        energy = float(((out - out.mean(0)) ** 2).mean())         # the output variance over samples

    def fidelity(m):                  # a score in "points": 100 minus the relative output MSE in %, at least 0
        return max(0.0, 100.0 - 100.0 * _output_mse(m, net, held) / energy)

    kw = dict(data=calib, repairs=("compensation",), evaluate=fidelity, step_fraction=0.1, input_shape=SHAPE,
              progress=False)
    full = prune_and_repair(net, Target(channels=1.0), criterion="l1", **kw).report.steps
    drops = [100.0 - s.accuracy for s in full]
    assert drops[1] > 0
    limit = drops[1] + 1e-3 if max(drops[2:]) > drops[1] + 1e-3 else drops[1] / 2   # step 1 within, or not
    stop = next(i for i, d in enumerate(drops) if d > limit)  # the first step beyond the target
    r = prune_and_repair(net, Target(accuracy_drop=limit), criterion="l1", **kw)
    steps = r.report.steps
    assert steps[0].accuracy == pytest.approx(100.0) and steps[0].channels_removed == 0
    assert [s.step for s in steps] == list(range(stop + 1))
    assert [s.accuracy for s in steps] == [s.accuracy for s in full[:stop + 1]]   # the same steps, repaired the same
    assert all(a.flops >= b.flops for a, b in zip(steps, steps[1:]))
    assert r.stop_reason == f"accuracy drop above {limit} points" and r.accepted_step == stop - 1
    assert steps[-1].note == "beyond the accuracy-drop target"
    assert fidelity(r.model) == pytest.approx(steps[r.accepted_step].accuracy, abs=1e-4)

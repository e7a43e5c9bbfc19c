"""The public verbs under odd models, data and calls (issue 27): each test is one reproduction of a
silent wrong result, a change to the caller's model, a loss of weights or an unhelpful error, and
fails on the code before the fix. Grouped by kind, in the order of the issue's table."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib as pl
from pruning_lib import layers as handlers
from pruning_lib.layers import CHANNELWISE, LayerHandler

S = (1, 3, 16, 16)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Head(nn.Module):
    def __init__(self, c, n=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, n)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


def small(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(block(3, 8), block(8, 8), Head(8)).eval()


def loader(n=32, bs=8, k=4, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k if labels is None else labels
    return DataLoader(TensorDataset(torch.randn(n, 3, 16, 16, generator=g), y), batch_size=bs)


@pytest.fixture
def registry():
    """Restore the layer-handler registry after a test that registers one."""
    saved, users = dict(handlers._REGISTRY), set(handlers._USER_TYPES)
    yield
    handlers._REGISTRY.clear()
    handlers._REGISTRY.update(saved)
    handlers._USER_TYPES.clear()
    handlers._USER_TYPES.update(users)


def proxy_accuracy(p0):
    """A stand-in accuracy (in %) that falls as channels are removed: 100 x the parameters kept."""
    return lambda m: 100.0 * pl.count_parameters(m) / p0


# =========================================================================== silent wrong results

@pytest.mark.parametrize("labels", [3 * (torch.arange(32) % 2), 2 + torch.arange(32) % 2,
                                    torch.tensor([c for c in range(10) if c not in (3, 5)] * 4)],
                         ids=["0-3", "2-3", "0-9 without 3, 5"])
def test_tvs_scores_skip_classes_without_samples(labels):
    x = torch.randn(len(labels), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    m = small()
    g = pl.discover(m, S)
    relabelled = torch.unique(labels, return_inverse=True)[1]            # the same classes, contiguous
    got = pl.tvs_scores(m, g, data=DataLoader(TensorDataset(x, labels), batch_size=8))
    want = pl.tvs_scores(m, g, data=DataLoader(TensorDataset(x, relabelled), batch_size=8))
    for d in g.dfcs:
        assert float(got[d].abs().max()) > 0
        torch.testing.assert_close(got[d], want[d], rtol=1e-12, atol=1e-15)
    r = pl.tvs_prune(m, 0.5, data=DataLoader(TensorDataset(x, labels), batch_size=8), graph=g)
    assert all(len(c) < d.channels - 1 for d, c in r.removals().items())


def test_tvs_one_class_prunes_nothing_with_a_warning():
    m = small()
    g = pl.discover(m, S)
    dl = loader(labels=torch.full((32,), 3))
    with pytest.warns(UserWarning, match="one class only"):
        r = pl.tvs_prune(m, 0.5, data=dl, graph=g)
    assert r.removed == {} and r.removals() == {}


def test_tvs_no_sample_is_a_data_source_error():
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)), batch_size=8)
    with pytest.raises(pl.DataSourceError, match="no labelled sample"):
        pl.tvs_scores(small(), data=empty, input_shape=S)


def test_collect_statistics_filter_scores_skip_absent_classes():
    """The sibling: filter_scores (LDIFF, TVS at BN sites) over classes that have samples."""
    m = small()
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = 3 * (torch.arange(32) % 2)
    stats = pl.collect_statistics(m, DataLoader(TensorDataset(x, y), batch_size=8))
    assert all(float(s.min()) > 0 for s in pl.filter_scores(stats).values())


def test_discover_refuses_a_module_with_forward_hooks():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), Head(8)

        def forward(self, x):
            return self.head(self.c2(F.relu(self.c1(x))))

    for register in (lambda c: c.register_forward_hook(lambda mod, inp, out: out.flip(1)),
                     lambda c: c.register_forward_pre_hook(lambda mod, inp: (inp[0].flip(1),))):
        m = Net().eval()
        register(m.c1 if register.__code__.co_names[0] == "register_forward_hook" else m.c2)
        g = pl.discover(m, S)
        assert not g.dfc_of("c1", "feed_in")
        assert any("forward hooks" in r for d in g.unprunable for r in d.reasons)


def test_discover_refuses_the_inside_of_a_hooked_container():
    m = small()
    m[0].register_forward_hook(lambda mod, inp, out: out.flip(1))
    g = pl.discover(m, S)
    assert not g.dfc_of("0.0", "feed_in")
    m2 = small()
    m2.register_forward_hook(lambda mod, inp, out: out * 2)   # the root's hooks touch only input/output
    assert len(pl.discover(m2, S).dfcs) == len(pl.discover(small(), S).dfcs)


def test_evaluate_refuses_labels_that_are_not_class_indices():
    m = small()
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 4
    for yy, bs, what in [(y[:, None], 8, r"squeeze\(1\)"), (F.one_hot(y, 4).float(), 1, r"argmax\(1\)"),
                         (y.float(), 8, "integer class indices")]:
        with pytest.raises(pl.DataSourceError, match=what):
            pl.evaluate(m, DataLoader(TensorDataset(x, yy), batch_size=bs))


def test_evaluate_refuses_outputs_that_are_not_logits():
    class Pair(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x

    with pytest.raises(ValueError, match=r"\(batch, classes\) logits"):
        pl.evaluate(nn.Conv2d(3, 4, 1), loader())
    with pytest.raises(ValueError, match="logits"):
        pl.evaluate(nn.Sequential(nn.Conv2d(3, 4, 1), Pair()), loader())


def _stats(model):
    return [(b.running_mean.clone(), b.running_var.clone()) for b in model.modules() if isinstance(b, nn.BatchNorm2d)]


def test_bn_recalibrate_empty_loader_is_an_error_and_keeps_the_statistics():
    m = small()
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, nn.BatchNorm2d):
                b.running_mean.fill_(3.0)
                b.running_var.fill_(5.0)
    before = _stats(m)
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)), batch_size=8)
    with pytest.raises(pl.DataSourceError, match="no batch"):
        pl.bn_recalibrate(m, data=empty, inplace=True)
    for (a, b), (c, d) in zip(before, _stats(m)):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_bn_recalibrate_keeps_a_bn_off_the_forward_path():
    class AuxBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.head = block(3, 8), Head(8)
            self.aux = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Head(8))

        def forward(self, x):
            f = self.c1(x)
            return (self.head(f), self.aux(f)) if self.training else self.head(f)

    torch.manual_seed(0)
    a = AuxBN().eval()
    with torch.no_grad():
        a.aux[1].running_mean.fill_(3.0)
        a.aux[1].running_var.fill_(5.0)
    with pytest.warns(RuntimeWarning, match="aux.1"):
        r = pl.bn_recalibrate(a, data=loader())
    assert torch.all(r.aux[1].running_mean == 3.0) and torch.all(r.aux[1].running_var == 5.0)
    assert not torch.equal(r.c1[1].running_mean, a.c1[1].running_mean)        # the reached BN is recalibrated


class Reused(nn.Module):
    def __init__(self, clone):
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)        # no BN after it: scored at its readers' input
        self.shared = nn.Conv2d(8, 8, 3, padding=1)    # called twice
        self.bn, self.head, self.clone = nn.BatchNorm2d(8), Head(8), clone

    def forward(self, x):
        a = F.relu(self.c0(x))
        b = a.clone() if self.clone else a
        return self.head(F.relu(self.bn(self.shared(a) + self.shared(b))))


def test_tvs_stream_scores_of_a_reader_called_twice():
    res = {}
    for clone in (False, True):
        torch.manual_seed(0)
        m = Reused(clone).eval()
        g = pl.discover(m, S)
        res[clone] = pl.tvs_scores(m, g, data=loader(48, 16))[g.dfc_of("c0", "feed_in")[0]]
    torch.testing.assert_close(res[False], res[True], rtol=1e-9, atol=1e-12)
    assert float(res[True].max()) < 0.5                   # not the clamped-variance maximum of 1.0


P0 = pl.count_parameters(small())


@pytest.mark.parametrize("target, ev", [
    (pl.Target(parameters=0.9, accuracy_drop=5.0), lambda m: float("nan")),
    (pl.Target(parameters=0.9, accuracy_drop=5.0), proxy_accuracy(P0)),
], ids=["evaluate NaN", "working gate"])
def test_global_prune_nan_evaluate_closes_the_gate(target, ev):
    r = pl.global_prune(small(), target, criterion="l1", evaluate=ev, input_shape=S, progress=False, step_fraction=0.1)
    assert r.report.steps[r.accepted_step].parameters / P0 > 0.9
    assert "accuracy drop above 5.0" in r.stop_reason


@pytest.mark.parametrize("field", ["accuracy_drop", "min_accuracy"])
def test_target_nan_accuracy_limit_warns_and_accepts_no_step(field):
    with pytest.warns(UserWarning, match=f"Target.{field} is NaN"):
        target = pl.Target(parameters=0.9, **{field: math.nan})
    r = pl.global_prune(small(), target, criterion="l1", evaluate=proxy_accuracy(P0), input_shape=S, progress=False,
                        step_fraction=0.1)
    assert r.accepted_step == 0 and "NaN never passes" in r.stop_reason


@pytest.mark.parametrize("field", ["parameters", "flops", "channels", "speedup"])
def test_target_refuses_nan_and_infinity_in_size_fields(field):
    for v in (math.nan, math.inf):
        with pytest.raises(ValueError, match=f"Target.{field}="):
            pl.Target(**{field: v})


def test_iter_tvs_prune_honours_target_flops():
    m = small()
    r = pl.iter_tvs_prune(m, pl.Target(flops=0.15, accuracy_drop=100.0), data=loader(64, 16), evaluate=lambda m: 100.0,
                          input_shape=S, max_iterations=10)
    removed = 1 - pl.count_flops(r.model, S) / pl.count_flops(m, S)
    assert 0 < removed <= 0.15
    small_target = pl.iter_tvs_prune(m, pl.Target(flops=0.05), data=loader(64, 16), evaluate=lambda m: 100.0, input_shape=S)
    assert pl.count_flops(small_target.model, S) == pl.count_flops(m, S)       # one channel is already 9 %
    assert r.report.final.flops == pl.count_flops(r.model, S)


@pytest.mark.parametrize("kw", [{"channels": 0.5}, {"speedup": 2.0}])
def test_iter_tvs_prune_refuses_target_fields_it_cannot_honour(kw):
    name = next(iter(kw))
    with pytest.raises(TypeError, match=f"cannot honour Target\\({name}="):
        pl.iter_tvs_prune(small(), pl.Target(**kw), data=loader(64, 16), evaluate=lambda m: 100.0, input_shape=S, max_iterations=2)


def test_global_prune_evaluate_returning_a_fraction_is_read_as_one():
    frac = lambda m: pl.count_parameters(m) / P0
    with pytest.warns(UserWarning, match="read as a fraction"):
        r = pl.global_prune(small(), pl.Target(parameters=0.9, accuracy_drop=5.0), criterion="l1", evaluate=frac, input_shape=S,
                            progress=False, step_fraction=0.1)
    pct = pl.global_prune(small(), pl.Target(parameters=0.9, accuracy_drop=5.0), criterion="l1", evaluate=proxy_accuracy(P0),
                          input_shape=S, progress=False, step_fraction=0.1)
    assert r.accepted_step == pct.accepted_step and r.stop_reason == pct.stop_reason
    assert r.report.steps[0].accuracy == pytest.approx(100.0)


def test_evaluate_contract_refuses_out_of_range_and_non_numbers():
    for ev, exc, what in [(lambda m: 250.0, ValueError, r"percentage in \[0, 100\]"),
                          (lambda m: None, TypeError, "must return the accuracy as a number"),
                          (lambda m: "90", TypeError, "must return the accuracy as a number")]:
        with pytest.raises(exc, match=what):
            pl.global_prune(small(), pl.Target(parameters=0.3, accuracy_drop=5), criterion="l1", input_shape=S,
                            progress=False, evaluate=ev)


class SumHead(nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.c1, self.c2, self.fc, self.pool = block(3, 8), block(8, 8), nn.Linear(8, 4), pool
        self.mp = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        y = self.c2(self.c1(x))
        if self.pool == "functional max":
            return self.fc(torch.flatten(F.adaptive_max_pool2d(y, 1), 1))
        if self.pool == "module max":
            return self.fc(torch.flatten(self.mp(y), 1))
        return self.fc({"mean": lambda t: t.mean((2, 3)), "sum": lambda t: t.sum((2, 3)),
                        "amax": lambda t: t.amax((2, 3))}[self.pool](y))


def test_dfpc_global_sum_and_max_pool_are_not_averages():
    s = {}
    for pool in ("mean", "sum", "amax", "functional max", "module max"):
        torch.manual_seed(0)
        m = SumHead(pool).eval()
        g = pl.discover(m, S)
        s[pool] = pl.dfpc_scores(m, g)[g.dfc_of("c2.0", "feed_in")[0]]
    for pool in ("sum", "amax", "functional max", "module max"):
        torch.testing.assert_close(s[pool], s["mean"] * 256, rtol=1e-12, atol=0)


def test_target_zero_removes_nothing():
    for kw in ({"parameters": 0.0}, {"flops": 0.0}):
        r = pl.global_prune(small(), pl.Target(**kw), criterion="l1", input_shape=S, progress=False, step_fraction=0.1)
        assert r.accepted_step == 0 and pl.count_parameters(r.model) == P0
        assert "already meets" in r.stop_reason and len(r.report.steps) == 1


def test_nan_inputs_are_refused_or_skipped():
    nan = DataLoader(TensorDataset(torch.full((16, 3, 16, 16), float("nan")), torch.arange(16) % 4), batch_size=8)
    with pytest.raises(pl.DataSourceError, match="batch 0: the inputs hold NaN"):
        pl.evaluate(small(), nan)
    with pytest.raises(pl.DataSourceError, match="NaN"):
        pl.tvs_scores(small(), data=nan, input_shape=S)
    m = small()
    with pytest.warns(RuntimeWarning, match="batch 0 .* NaN"):
        r = pl.bn_recalibrate(m, data=nan)
    for (a, b), (c, d) in zip(_stats(m), _stats(r)):
        assert torch.equal(a, c) and torch.equal(b, d)        # every batch skipped: statistics kept


# =========================================================================== the caller's model changed

def test_compare_latency_leaves_models_on_their_device():
    m = small()
    pl.compare_latency({"m": m}, (2, 3, 16, 16), warmup=1, repeats=1, device="meta")
    assert {p.device.type for p in m.parameters()} == {"cpu"}


class Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.b, self.head = block(3, 8), block(8, 8), Head(8)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.b(x))


def fine_tuning():
    torch.manual_seed(0)
    m = Res().train()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eval()                               # frozen BN
    return m


@pytest.mark.parametrize("call", [
    lambda m: pl.evaluate(m, loader()), lambda m: pl.count_flops(m, S),
    lambda m: pl.compare_latency({"m": m}, (2, 3, 16, 16), warmup=1, repeats=1),
    lambda m: pl.measure_latency(m, (2, 3, 16, 16), warmup=1, repeats=1),
    lambda m: pl.tvs_scores(m, pl.discover(m, S), data=loader()),
    lambda m: pl.bn_recalibrate(m, data=loader(), inplace=True)],
    ids=["evaluate", "count_flops", "compare_latency", "measure_latency", "tvs_scores", "bn_recalibrate inplace"])
def test_submodule_modes_are_restored(call):
    m = fine_tuning()
    before = {n: x.training for n, x in m.named_modules()}
    call(m)
    assert {n: x.training for n, x in m.named_modules()} == before


@pytest.mark.parametrize("verb", [lambda m: pl.discover(m, S), lambda m: pl.count_flops(m, S),
                                  lambda m: pl.evaluate(m, loader()),
                                  lambda m: pl.measure_latency(m, (2, 3, 16, 16), warmup=1, repeats=1)],
                         ids=["discover", "count_flops", "evaluate", "measure_latency"])
def test_verbs_leave_lazy_modules_lazy(verb):
    torch.manual_seed(0)
    m = nn.Sequential(nn.LazyConv2d(8, 3, padding=1), nn.ReLU(), nn.LazyConv2d(8, 3, padding=1), nn.Flatten(),
                      nn.LazyLinear(4))
    verb(m)
    assert all(isinstance(p, nn.parameter.UninitializedParameter) for p in m.parameters())
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 4)


class PReLUHandler(LayerHandler):
    kind, role = "prelu", CHANNELWISE
    tensors = ("weight",)

    def sizes(self, m):
        return m.num_parameters, m.num_parameters

    def shrink(self, m, out_drop, in_drop):
        keep = [i for i in range(m.num_parameters) if i not in out_drop]
        m.weight.data = m.weight.data[keep]                     # the in-place idiom
        m.num_parameters = len(keep)

    def parameters_after(self, m, n_out, n_in):
        return m.num_parameters - n_out

    def resize(self, m, state, prefix):
        pass


def test_prune_copy_with_a_handler_that_shrinks_in_place(registry):
    pl.register_handler(nn.PReLU, PReLUHandler())
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 8, 3, padding=1), Head(8)).eval()
    before = copy.deepcopy(m.state_dict())
    g = pl.discover(m, S)
    p = pl.prune(m, g, {g.dfc_of("0", "feed_in")[0]: [0, 1]})
    assert p[1].weight.shape == (6,) and m[1].weight.shape == (8,)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


def test_resize_to_state_keeps_requires_grad_device_and_untouched_layers():
    S2 = (2, 3, 16, 16)
    m = small()
    g = pl.discover(m, S2)
    state = pl.prune(m, g, {g.dfcs[0]: [0]}).state_dict()
    fresh = small()
    for p in fresh.parameters():
        p.requires_grad_(False)
    ids = {n: id(p) for n, p in fresh.named_parameters()}
    same = {n for n, p in fresh.named_parameters() if p.shape == state[n].shape}
    pl.resize_to_state(fresh, state)
    fresh.load_state_dict(state)
    assert not any(p.requires_grad for p in fresh.parameters())
    assert all(id(p) == ids[n] for n, p in fresh.named_parameters() if n in same)
    meta = small().to("meta")
    pl.resize_to_state(meta, state)
    assert {t.device.type for t in list(meta.parameters()) + list(meta.buffers())} == {"meta"}


def test_prune_keeps_channels_last():
    m = small().to(memory_format=torch.channels_last)
    g = pl.discover(m, S)
    p = pl.prune(m, g, {d: [0] for d in g.dfcs})
    assert all(x.weight.is_contiguous(memory_format=torch.channels_last)
               for x in p.modules() if isinstance(x, nn.Conv2d))


# =========================================================================== weights lost

def test_resize_to_state_of_another_architecture_touches_nothing():
    m = small()
    g = pl.discover(m, (2, 3, 16, 16))
    state = pl.prune(m, g, {g.dfcs[1]: [0]}).state_dict()
    torch.manual_seed(1)
    other = nn.Sequential(block(3, 8), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)), Head(8))
    trained = copy.deepcopy(other.state_dict())
    with pytest.raises(pl.PruningError, match="state does not belong to this architecture.*unexpected keys.*"
                                              "build the model the state was saved from"):
        pl.resize_to_state(other, state)
    assert all(torch.equal(v, trained[k]) for k, v in other.state_dict().items())
    with pytest.raises(pl.PruningError, match="another rank"):
        pl.resize_to_state(small(), {k: v.flatten() if k == "0.0.weight" else v for k, v in small().state_dict().items()})


def test_why_another_architecture_is_refused_not_warned():
    """PyTorch's load_state_dict copies every tensor whose name and shape match before it refuses the
    others: a warning in resize_to_state followed by the usual load would lose the trained weights."""
    m = small()
    g = pl.discover(m, (2, 3, 16, 16))
    state = pl.prune(m, g, {g.dfcs[1]: [0]}).state_dict()
    other = nn.Sequential(block(3, 8), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)), Head(8))
    trained = other[0][0].weight.detach().clone()
    with pytest.raises(RuntimeError, match="Unexpected key"):
        other.load_state_dict(state)
    assert not torch.equal(other[0][0].weight, trained) and torch.equal(other[0][0].weight, state["0.0.weight"])


# =========================================================================== unhelpful errors

@pytest.mark.parametrize("dt", [torch.float64, torch.float16, torch.bfloat16])
def test_resize_to_state_rebuilds_in_the_model_dtype(dt):
    m = small().to(dt)
    g = pl.discover(m, (2, 3, 16, 16))
    p = pl.prune(m, g, {g.dfcs[0]: [0, 1]})
    fresh = small().to(dt)
    pl.resize_to_state(fresh, p.state_dict())
    fresh.load_state_dict(p.state_dict())
    assert {t.dtype for t in fresh.state_dict().values() if t.is_floating_point()} == {dt}
    with torch.no_grad():
        assert torch.equal(fresh(torch.ones(2, 3, 16, 16, dtype=dt)), p(torch.ones(2, 3, 16, 16, dtype=dt)))


class Grouped(nn.Module):
    def __init__(self, groups=4, out=16):
        super().__init__()
        self.c1 = block(3, 16)
        self.g = nn.Conv2d(16, out, 3, padding=1, groups=groups)
        self.bn = nn.BatchNorm2d(out)
        self.c2 = nn.Conv2d(out, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.c2(F.relu(self.bn(self.g(self.c1(x))))))


def test_resize_to_state_restores_a_grouped_conv():
    torch.manual_seed(0)
    m = Grouped().eval()
    g = pl.discover(m, (2, 3, 16, 16))
    p = pl.prune(m, g, {g.grouped[0]: [1]})
    torch.manual_seed(1)
    fresh = Grouped().eval()
    pl.resize_to_state(fresh, p.state_dict())
    fresh.load_state_dict(p.state_dict())
    assert fresh.g.groups == p.g.groups == 3
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), p(x))


def test_resize_to_state_bn_without_running_stats():
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, track_running_stats=False), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), Head(8)).eval()
    m = make()
    g = pl.discover(m, (2, 3, 16, 16))
    p = pl.prune(m, g, {g.dfc_of("0", "feed_in")[0]: [0, 1, 2]})
    fresh = make()
    pl.resize_to_state(fresh, p.state_dict())
    fresh.load_state_dict(p.state_dict())
    assert fresh[1].num_features == 5


@pytest.mark.parametrize("labels", [lambda y: y.float(), lambda y: F.one_hot(y, 4).float(), lambda y: y[:, None],
                                    lambda y: y.to(torch.uint8)], ids=["float", "one-hot", "(N,1)", "uint8"])
def test_tvs_label_dtypes(labels):
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 4
    m = small()
    g = pl.discover(m, S)
    dl = DataLoader(TensorDataset(x, labels(y)), batch_size=8)
    if labels(y).dtype == torch.uint8:                       # integer labels of any width are class indices
        ref = pl.tvs_scores(m, g, data=DataLoader(TensorDataset(x, y), batch_size=8))
        got = pl.tvs_scores(m, g, data=dl)
        assert all(torch.equal(got[d], ref[d]) for d in g.dfcs)
    else:
        with pytest.raises(pl.DataSourceError, match="labels"):
            pl.tvs_scores(m, g, data=dl)


def test_bn_recalibrate_skips_bn_without_running_stats():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                      nn.BatchNorm2d(8, track_running_stats=False), nn.ReLU(), Head(8)).eval()
    r = pl.bn_recalibrate(m, data=loader())
    assert r[4].running_mean is None and not torch.equal(r[1].running_mean, m[1].running_mean)
    only = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, track_running_stats=False), Head(8))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        pl.bn_recalibrate(only, data=loader())


def test_global_prune_evaluate_returning_a_tensor():
    ev = lambda m: torch.tensor(pl.evaluate(m, loader()))
    r = pl.global_prune(small(), pl.Target(parameters=0.3, accuracy_drop=100), criterion="l1", input_shape=S,
                        progress=False, evaluate=ev)
    assert all(isinstance(s.accuracy, float) for s in r.report.steps)


def test_criterion_scoring_another_graph():
    def mine(model, graph=None, **kw):
        return pl.l1_scores(model, input_shape=S)

    with pytest.raises(ValueError, match="must score the graph it is given"):
        pl.global_prune(small(), pl.Target(parameters=0.3), criterion=mine, input_shape=S, progress=False)


def test_no_prunable_dfc_names_the_reasons():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 14 * 14, 3))
    with pytest.raises(ValueError, match="no prunable DFC.*GroupNorm") as e:
        pl.global_prune(m, pl.Target(parameters=0.3), criterion="l1", input_shape=S, progress=False)
    assert "coupled=True" not in str(e.value)


def test_multi_input_and_dict_input_models():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = block(3, 8), block(3, 8), Head(8)

        def forward(self, x, y):
            return self.head(self.a(x) + self.b(y))

    class DictInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.head = block(3, 8), Head(8)

        def forward(self, batch):
            return self.head(self.a(batch["image"]))

    with pytest.raises(pl.UntraceableModelError, match=r"takes 2 inputs \(x, y\).*one tensor.*wrap"):
        pl.discover(TwoInputs(), S)
    with pytest.raises(pl.UntraceableModelError, match="as a dict.*wrap"):
        pl.discover(DictInput(), S)


def test_training_only_branch_is_traced():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.head, self.aux = block(3, 8), block(8, 8), Head(8), Head(8)

        def forward(self, x):
            f = self.c1(x)
            out = self.head(self.c2(f))
            return (out, self.aux(f)) if self.training else out

    torch.manual_seed(0)
    m = Aux().eval()
    g = pl.discover(m, (2, 3, 16, 16))
    d = g.dfc_of("c1.0", "feed_in")[0]
    assert "aux.fc" in d.B and not m.training
    p = pl.prune(m, g, {d: [0, 1]})
    out, aux = p.train()(torch.randn(2, 3, 16, 16))
    assert aux.shape == (2, 4)


def test_wrapped_models_name_the_attribute():
    with pytest.raises(pl.UntraceableModelError, match=r"pass model\.module"):
        pl.discover(nn.DataParallel(small()), S)
    with pytest.raises(pl.UntraceableModelError, match=r"pass model\._orig_mod"):
        pl.discover(torch.compile(small()), S)


def test_torch_prune_mask_reason():
    import torch.nn.utils.prune as tp
    m = small()
    tp.l1_unstructured(m[1][0], "weight", 0.3)
    g = pl.discover(m, S)
    reasons = {r for d in g.unprunable for r in d.reasons if "1.0" in r}
    assert reasons and all("torch.nn.utils.prune.remove" in r for r in reasons if "mask" in r)
    assert any("mask" in r for r in reasons)


class Scale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1)


class ScaleHandler(LayerHandler):
    kind, role = "scale", CHANNELWISE
    tensors = ("weight",)

    def sizes(self, m):
        return len(m.weight), len(m.weight)

    def shrink(self, m, out_drop, in_drop):
        keep = torch.tensor([i for i in range(len(m.weight)) if i not in out_drop])
        m.weight = nn.Parameter(m.weight.data.index_select(0, keep))

    def parameters_after(self, m, n_out, n_in):
        return len(m.weight) - n_out

    def resize(self, m, state, prefix):
        pass


def test_register_handler_for_a_user_layer_type(registry):
    pl.register_handler(Scale, ScaleHandler())
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Scale(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                      Head(8)).eval().double()
    g = pl.discover(m, S)
    d = g.dfc_of("0", "feed_in")[0]
    assert "1" in d.D
    p = pl.prune(m, g, {d: [0, 5]})
    ref = copy.deepcopy(m)
    with torch.no_grad():
        ref[3].weight[:, [0, 5]] = 0
        x = torch.randn(S, dtype=torch.float64)
        torch.testing.assert_close(p(x), ref(x), rtol=0, atol=1e-12)


def test_target_takes_numpy_and_tensor_scalars():
    assert pl.Target(parameters=np.float32(0.5)).parameters == 0.5
    assert pl.Target(flops=torch.tensor(0.25)).flops == 0.25
    assert pl.Target(parameters=0.3).parameters == 0.3 and type(pl.Target(accuracy_drop=5).accuracy_drop) is int
    with pytest.raises(TypeError, match="Target.parameters='0.5': the type str is not a real number"):
        pl.Target(parameters="0.5")
    with pytest.raises(TypeError, match="not a real number"):
        pl.Target(parameters=True)
    with pytest.raises(ValueError, match=r"min_accuracy=150.*\[0, 100\]"):
        pl.Target(min_accuracy=150)


def test_iter_tvs_prune_keywords_use_target_validation():
    with pytest.warns(UserWarning, match="Target.accuracy_drop is NaN"):
        r = pl.iter_tvs_prune(small(), pl.Target(accuracy_drop=math.nan), data=loader(64, 16), evaluate=lambda m: 100.0, input_shape=S,
                              max_iterations=2)
    assert all(not a.accepted for a in r.attempts)
    assert pl.iter_tvs_prune(small(), pl.Target(parameters=np.float64(0.0)), data=loader(64, 16), evaluate=lambda m: 100.0,
                             input_shape=S).stop_reason.startswith("parameters at most 100% of the unpruned")


def test_quiet_run_gives_no_warning():
    """The checks warn only where something is odd: an ordinary run is silent."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pl.bn_recalibrate(small(), data=loader())
        pl.tvs_scores(small(), data=loader(), input_shape=S)
        pl.global_prune(small(), pl.Target(parameters=0.3, accuracy_drop=50), criterion="l1", evaluate=loader(),
                        input_shape=S, progress=False)

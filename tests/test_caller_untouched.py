"""Every public verb that measures, scores or prunes a copy leaves the caller's model exactly as it
found it: parameters and buffers (the same objects, the same values), requires_grad, the mode of
every submodule, device, dtype, memory format and hooks (issue 27)."""
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib as pl
from pruning_lib.pruning.channel_cost import dfc_costs, gamma_summary

S = (1, 3, 16, 16)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Net(nn.Module):
    """A residual stream, a conv + BN DFC and a head: both TVS score sites and a coupled DFC."""

    def __init__(self):
        super().__init__()
        self.stem, self.b1, self.b2 = block(3, 8), block(8, 8), block(8, 8)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.b2(self.b1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def odd_model() -> nn.Module:
    """Mixed submodule modes, a forward hook, a frozen parameter, channels_last weights."""
    torch.manual_seed(0)
    m = Net().to(memory_format=torch.channels_last).train()
    m.b1[1].eval()                                       # a frozen BN while the rest trains
    m.stem[0].weight.requires_grad_(False)               # a frozen parameter
    m.pool.register_forward_hook(lambda mod, inp, out: None)       # a read-only hook
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, nn.BatchNorm2d):
                b.running_mean.uniform_(-0.5, 0.5)
                b.running_var.uniform_(0.5, 1.5)
    return m


def snapshot(m: nn.Module) -> dict:
    return {
        "tensors": {k: (id(v), v.detach().clone(), v.dtype, v.device, v.requires_grad,
                        v.is_contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v.is_contiguous())
                    for k, v in list(m.named_parameters()) + list(m.named_buffers())},
        "modes": {n: x.training for n, x in m.named_modules()},
        "hooks": {n: (tuple(x._forward_hooks), tuple(x._forward_pre_hooks), tuple(x._backward_hooks))
                  for n, x in m.named_modules()},
        "modules": {n: id(x) for n, x in m.named_modules()},
    }


def assert_same(before: dict, after: dict) -> None:
    assert after["modes"] == before["modes"]
    assert after["hooks"] == before["hooks"]
    assert after["modules"] == before["modules"]
    assert before["tensors"].keys() == after["tensors"].keys()
    for k, (i, v, dt, dev, rg, fmt) in before["tensors"].items():
        j, w, dt2, dev2, rg2, fmt2 = after["tensors"][k]
        assert (i, dt, dev, rg, fmt) == (j, dt2, dev2, rg2, fmt2), k
        assert torch.equal(v, w), k


def data(n=32):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 4), batch_size=8)


def graph_of(m):
    return pl.discover(m, S)


VERBS = {
    "discover": lambda m: pl.discover(m, S),
    "count_parameters": lambda m: pl.count_parameters(m),
    "count_flops": lambda m: pl.count_flops(m, S),
    "evaluate": lambda m: pl.evaluate(m, data()),
    "measure_latency": lambda m: pl.measure_latency(m, (2, 3, 16, 16), warmup=1, repeats=1),
    "compare_latency": lambda m: pl.compare_latency({"a": m, "b": m}, (2, 3, 16, 16), warmup=1, repeats=1),
    "compare_latency other device": lambda m: pl.compare_latency({"a": m}, (2, 3, 16, 16), warmup=1, repeats=1,
                                                                 device="meta"),
    "dfpc_scores": lambda m: pl.dfpc_scores(m, graph_of(m)),
    "l1_scores": lambda m: pl.l1_scores(m, graph_of(m)),
    "random_scores": lambda m: pl.random_scores(m, graph_of(m)),
    "tvs_scores": lambda m: pl.tvs_scores(m, graph_of(m), data=data()),
    "collect_statistics": lambda m: pl.collect_statistics(m, data()),
    "global_prune dfpc": lambda m: pl.global_prune(m, pl.Target(parameters=0.3, accuracy_drop=100), criterion="dfpc",
                                                   evaluate=data(), input_shape=S, progress=False, latency=True,
                                                   latency_repeats=1, step_fraction=0.2),
    "global_prune tvs": lambda m: pl.global_prune(m, pl.Target(parameters=0.3), criterion="tvs", data=data(), input_shape=S,
                                                  progress=False, step_fraction=0.2),
    "tvs_prune": lambda m: pl.tvs_prune(m, 0.5, data=data(), graph=graph_of(m), input_shape=S),
    "iter_tvs_prune": lambda m: pl.iter_tvs_prune(m, pl.Target(parameters=0.2, accuracy_drop=100), data=data(), evaluate=data(),
                                                  input_shape=S, max_iterations=3),
    "prune_to_sparsity": lambda m: pl.prune_to_sparsity(m, pl.Target(parameters=0.2), criterion=pl.l1_scores(m, graph_of(m))),
    "prune(inplace=False)": lambda m: pl.prune(m, graph_of(m), {0: [0, 1]}),
    "predicted_parameters": lambda m: pl.predicted_parameters(m, graph_of(m), {0: [0, 1]}),
    "channel_counts": lambda m: pl.channel_counts(m),
    "bn_recalibrate(inplace=False)": lambda m: pl.bn_recalibrate(m, data=data()),
    "coupled_mac_share": lambda m: pl.coupled_mac_share(m, graph_of(m)),
    "coupled_time_share": lambda m: pl.coupled_time_share(m, graph_of(m), (2, 3, 16, 16), repeats=1, warmup=1,
                                                          method="hooks"),
    "dfc_costs": lambda m: dfc_costs(m, graph_of(m), S),
    "gamma_summary": lambda m: gamma_summary(m),
    "hifi_scores": lambda m: pl.hifi_scores(m, graph_of(m), data=data()),
    "prune_and_repair": lambda m: pl.prune_and_repair(m, pl.Target(channels=0.3), criterion="l1", data=data(),
                                                      input_shape=S, step_fraction=0.3),
    "repair_pruned": lambda m: (lambda g: pl.repair_pruned(m, g, {g.dfcs[0]: [0, 1]}, data()))(graph_of(m)),
    "compensate": lambda m: (lambda g: pl.compensate(pl.prune(m, g, {g.dfcs[0]: [0, 1]}), m, g, {g.dfcs[0]: [0, 1]},
                                                     data()))(graph_of(m)),
    "synthesize_images": lambda m: pl.synthesize_images(m, 2, shape=S[1:], iterations=1, batch_size=2,
                                                        progress=False),
}


@pytest.mark.parametrize("verb", list(VERBS))
def test_verb_leaves_the_model_as_found(verb):
    m = odd_model()
    before = snapshot(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        VERBS[verb](m)
    assert_same(before, snapshot(m))


def test_every_public_verb_is_checked():
    """A new public verb that takes a model must be added to VERBS (or listed here as not measuring)."""
    takes_model = {"discover", "count_parameters", "count_flops", "evaluate", "measure_latency", "compare_latency",
                   "dfpc_scores", "l1_scores", "random_scores", "tvs_scores", "collect_statistics", "global_prune",
                   "tvs_prune", "iter_tvs_prune", "prune_to_sparsity", "prune", "predicted_parameters",
                   "channel_counts", "bn_recalibrate", "coupled_mac_share", "coupled_time_share", "hifi_scores",
                   "prune_and_repair", "repair_pruned", "compensate", "synthesize_images"}
    not_measuring = {"resize_to_state", "plan", "removal_order", "speedups", "eps_ratios", "filter_scores",
                     "get_criterion", "list_criteria", "register_criterion", "register_handler", "Target",
                     "PruningResult", "RepairResult", "PruningReport", "PruningStep", "ChannelScores", "Criterion", "ChannelGraph",
                     "DFC", "ChannelRef", "UntraceableModelError", "PruningError", "DataSourceError",
                     "GlobalPruningResult", "IterResult", "__version__"}
    checked = {v.split(" ")[0].split("(")[0] for v in VERBS}
    assert takes_model <= checked
    assert set(pl.__all__) - takes_model - not_measuring == set(), "a new public name: check it here"

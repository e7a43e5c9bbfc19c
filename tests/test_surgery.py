"""Physical surgery: pruned models compute exactly what the original computes when the removed
channels carry zero into their readers; random prunes give runnable models of predicted size."""
import copy
import functools
import random

import pytest
import torch
from torch import nn

from pruning_lib.course.checkpoints import load_checkpoint, save_checkpoint
from pruning_lib.graph import discover
from pruning_lib.course.models import get_model
from pruning_lib.measure import count_parameters
from pruning_lib.surgery import PruningError, channel_counts, predicted_parameters, prune
from toy_models import BranchNet, CatNet, Chain, GroupedNet, ShuffleNet, Tied, randomised, silence_

# name -> (factory, input shape). Inputs are as small as each model accepts (CIFAR ResNets reach
# 1x1 at 8x8, torchvision's at 32x32): the channel structure does not depend on the spatial size.
MODELS = {
    "catnet": (CatNet, (2, 3, 8, 8)),
    "branchnet": (BranchNet, (2, 3, 8, 8)),
    "shufflenet": (ShuffleNet, (2, 3, 8, 8)),
    "resnet20": (lambda: get_model("resnet20"), (2, 3, 8, 8)),
    "resnet56": (lambda: get_model("resnet56"), (2, 3, 8, 8)),
    "cifar_resnet50": (lambda: get_model("cifar_resnet50"), (1, 3, 8, 8)),
    "cifar_resnet101": (lambda: get_model("cifar_resnet101"), (1, 3, 8, 8)),
    "torchvision/resnet18": (lambda: get_model("torchvision/resnet18"), (1, 3, 32, 32)),
    "torchvision/resnet50": (lambda: get_model("torchvision/resnet50"), (1, 3, 32, 32)),
    "torchvision/resnet101": (lambda: get_model("torchvision/resnet101"), (1, 3, 32, 32)),
    "torchvision/vgg11_bn": (lambda: get_model("torchvision/vgg11_bn"), (1, 3, 32, 32)),
    "torchvision/mobilenet_v2": (lambda: get_model("torchvision/mobilenet_v2"), (1, 3, 32, 32)),
    "torchvision/densenet121": (lambda: get_model("torchvision/densenet121"), (1, 3, 32, 32)),
}
# How many separate prunes the equivalence test makes per model: every DFC alone where the model
# is small; otherwise each coupled DFC alone (when there are few) and the rest split into a few
# groups pruned together (every DFC is still pruned and checked; large models are costly to copy).
GROUPS = {"cifar_resnet50": 2, "cifar_resnet101": 2, "torchvision/resnet50": 2,
          "torchvision/resnet101": 2, "torchvision/vgg11_bn": 1, "torchvision/densenet121": 6,
          "torchvision/mobilenet_v2": 3}


@functools.lru_cache(maxsize=None)
def built(name: str):
    """(float32 eval model, its ChannelGraph), shared by the tests (which never modify them)."""
    factory, shape = MODELS[name]
    model = factory().eval()
    return model, discover(model, shape)


def random_removals(graph, rng: random.Random, n_dfcs: int | None = None) -> dict:
    keys = rng.sample(range(len(graph.dfcs)), n_dfcs or rng.randint(min(2, len(graph.dfcs)), len(graph.dfcs)))
    out = {}
    for k in keys:
        c = graph.dfcs[k].channels
        if c > 1:
            out[k] = rng.sample(range(c), rng.randint(1, c - 1))
    return out


def batches(name: str, graph) -> list[list[int]]:
    keys = list(range(len(graph.dfcs)))
    if name not in GROUPS:
        return [[k] for k in keys]
    alone = [k for k in keys if graph.dfcs[k].coupled]
    alone = alone if len(alone) <= 5 else []
    rest = [k for k in keys if k not in alone]
    n = GROUPS[name]
    return [[k] for k in alone] + [rest[i::n] for i in range(n) if rest[i::n]]


@pytest.mark.parametrize("name", list(MODELS))
def test_every_dfc_pruned_is_exact(name):
    """Proof of the surgery: with the channels to remove silenced (zero weight into every reader)
    the original computes f(x); the physically pruned model must compute the same f(x) in float64.
    A missed reader, a wrong offset or a wrong coupling breaks the shapes or the values."""
    base, graph = built(name)
    shape = MODELS[name][1]
    rng = random.Random(3)
    removals = {k: rng.sample(range(d.channels), max(1, d.channels // 3))
                for k, d in enumerate(graph.dfcs)}
    reference = silence_(randomised(base, seed=1), graph, removals)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(x)
    parts = batches(name, graph)
    assert sorted(k for p in parts for k in p) == list(range(len(graph.dfcs)))
    for part in parts:
        pruned = prune(reference, graph, {k: removals[k] for k in part})
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), expected, rtol=1e-10, atol=1e-10,
                                       msg=lambda m: f"{name}, DFCs {part}: {m}")
        assert count_parameters(pruned) < count_parameters(reference)


# trials per model: 200+ in all, cheap models more often
FUZZ_TRIALS = {"catnet": 45, "branchnet": 45, "shufflenet": 35, "resnet20": 35, "resnet56": 20,
               "torchvision/mobilenet_v2": 15, "torchvision/densenet121": 6, "torchvision/resnet18": 10,
               "cifar_resnet50": 4, "cifar_resnet101": 2, "torchvision/resnet50": 4,
               "torchvision/resnet101": 2, "torchvision/vgg11_bn": 1}
REDISCOVER = {"catnet", "branchnet", "shufflenet", "resnet20", "torchvision/mobilenet_v2"}


def test_fuzz_random_multi_dfc_prunes():
    """Random prunes of several DFCs at once across the models: each gives a model that runs, has
    exactly the parameter count predicted from the removed channels, and (small models) whose own
    discovered DFCs are the original ones minus the removed channels."""
    assert set(FUZZ_TRIALS) == set(MODELS)
    rng = random.Random(0)
    count = multi = 0
    for name, trials in FUZZ_TRIALS.items():
        model, graph = built(name)
        shape = MODELS[name][1]
        x = torch.randn(shape)
        with torch.no_grad():
            out_shape = model(x).shape
        logits = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
        assert all(logits not in d.A for d in graph.dfcs), f"{name}: logits must not be prunable"
        for _ in range(trials):
            removals = random_removals(graph, rng)
            expected = predicted_parameters(model, graph, removals)
            pruned = prune(model, graph, removals)
            assert count_parameters(pruned) == expected, name
            before, after = channel_counts(model), channel_counts(pruned)
            for k, d in enumerate(graph.dfcs):       # each feed-in layer lost exactly its DFC's channels
                for ref in d.feed_in:
                    assert after[ref.module] == before[ref.module] - len(removals.get(k, ())), (name, ref)
            with torch.no_grad():
                assert pruned(x).shape == out_shape
            left = [d.channels - len(removals.get(k, ())) for k, d in enumerate(graph.dfcs)]
            if name in REDISCOVER and min(left) > 1 and count % 2:     # (a 1-channel depthwise conv reads as a plain conv)
                again = discover(pruned, shape)
                want = sorted((d.A[0], n) for d, n in zip(graph.dfcs, left))
                assert sorted((d.A[0], d.channels) for d in again.dfcs) == want, name
            count += 1
            multi += len(removals) > 1
    assert count >= 200 and multi >= 200, (count, multi)


def test_caller_model_untouched_unless_inplace():
    model = get_model("resnet20").eval()
    graph = discover(model, (1, 3, 32, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune(model, graph, {0: [0, 1], 2: [5]})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert count_parameters(pruned) < count_parameters(model)
    same = prune(model, graph, {0: [0, 1], 2: [5]}, inplace=True)
    assert same is model and count_parameters(model) == count_parameters(pruned)


def test_refuses_to_empty_a_dfc_or_touch_unprunable_channels():
    model = get_model("resnet20")
    graph = discover(model, (1, 3, 32, 32))
    with pytest.raises(PruningError, match="keep at least one channel"):
        prune(model, graph, {0: range(graph.dfcs[0].channels)})
    with pytest.raises(PruningError, match="network output"):
        prune(model, graph, {graph.unprunable[-1].index: [0]})
    with pytest.raises(PruningError, match="channels 0..15"):
        prune(model, graph, {0: [16]})
    with pytest.raises(PruningError, match="no DFC 99"):
        prune(model, graph, {99: [0]})
    once = prune(model, graph, {0: [1, 2]})
    with pytest.raises(PruningError, match=r"'conv1' has 3 -> 14 channels but the graph saw 3 -> 16.*[Dd]iscover again"):
        prune(once, graph, {0: [3]})                           # a stale graph, from before the first prune
    sg = discover(ShuffleNet(), (1, 3, 8, 8))
    shuffled = next(d for d in sg.unprunable if "conv1" in d.A)
    with pytest.raises(PruningError, match=r"not prunable: .*view"):
        prune(ShuffleNet(), sg, {shuffled: [0]})


def test_depthwise_groups_shrink():
    model = BranchNet().eval()
    graph = discover(model, (1, 3, 8, 8))
    pruned = prune(model, graph, {0: [1, 5, 7]})
    dw = pruned.get_submodule("dw")
    assert dw.groups == dw.in_channels == dw.out_channels == 9
    assert pruned.get_submodule("head").in_channels == 18     # the stream is read twice
    mnet, g = built("torchvision/mobilenet_v2")
    d = g.dfc_of("features.2.conv.1.0")[0]
    small = prune(mnet, g, {d: range(10)})
    conv = small.get_submodule("features.2.conv.1.0")
    assert conv.groups == conv.in_channels == conv.out_channels == d.channels - 10


@pytest.mark.parametrize("name", ["resnet56", "torchvision/mobilenet_v2", "torchvision/densenet121"])
def test_pruned_model_saves_and_loads(tmp_path, name):
    model, graph = built(name)
    shape = MODELS[name][1]
    pruned = prune(model, graph, random_removals(graph, random.Random(5)))
    path = save_checkpoint(tmp_path / "pruned.pt", pruned, name, {"note": "fuzz"}, pruned=True)
    loaded, meta = load_checkpoint(path)
    assert meta["pruned"] and channel_counts(loaded) == channel_counts(pruned)
    assert count_parameters(loaded) == count_parameters(pruned)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))


def test_pruned_copy_shares_no_memory_with_the_original():
    """prune() does not copy the tensors it replaces anyway; nothing of the original may leak into
    the result, even when a layer left whole shares a tensor (here a BN buffer) with a pruned one."""
    class SharedBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1)
            self.bn1, self.bn2 = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
            self.bn2.running_var = self.bn1.running_var
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return self.fc(y.mean((2, 3)))

    for net, shape in [(get_model("resnet20"), (1, 3, 32, 32)), (SharedBuffer().eval(), (1, 3, 8, 8))]:
        graph = discover(net, shape)
        first = next(d for d in graph.dfcs if "conv1" in d.A)
        pruned = prune(net, graph, {first: [0, 1]})
        ptrs = {t.data_ptr() for t in list(net.parameters()) + list(net.buffers())}
        mine = [t for _, t in pruned.named_parameters(remove_duplicate=False)] + list(pruned.buffers())
        assert not any(t.data_ptr() in ptrs for t in mine if t.numel())
        with torch.no_grad():
            pruned(torch.randn(shape))


def test_same_dfc_by_index_and_by_object_counts_once():
    model, graph = built("resnet20")
    d = graph.dfcs[0]
    with pytest.raises(PruningError, match="removing all 16 channels of DFC #0.*keep at least one channel"):
        prune(model, graph, {0: range(8), d: range(8, 16)})
    with pytest.raises(PruningError, match="keep at least one channel"):
        predicted_parameters(model, graph, {0: range(8), d: range(8, 16)})
    both = prune(model, graph, {0: [1, 2], d: [2, 3]})         # the union, once
    assert channel_counts(both)["conv1"] == 13
    assert count_parameters(both) == predicted_parameters(model, graph, {0: [1, 2, 3]})


def test_dfc_of_another_graph_is_refused():
    model, graph = built("resnet20")
    older = discover(model, (1, 3, 32, 32))
    with pytest.raises(PruningError, match=r"DFC #0 .* is not a DFC of this graph.*another \(or an older\) discovery"):
        prune(model, graph, {older.dfcs[0]: [0]})
    once = prune(model, graph, {0: [1]})
    again = discover(once, (1, 3, 32, 32))
    with pytest.raises(PruningError, match="not a DFC of this graph"):
        prune(once, again, {graph.dfcs[1]: [0]})


@pytest.mark.parametrize("bad", [1.7, "3", True, 2.0, None])
def test_channel_indices_must_be_plain_ints(bad):
    model, graph = built("resnet20")
    with pytest.raises(PruningError, match=r"a channel of DFC #0 must be a plain integer index, got"):
        prune(model, graph, {0: [0, bad]})
    with pytest.raises(PruningError, match=r"a DFC key must be a plain integer index"):
        prune(model, graph, {bad: [0]})


def test_integer_like_indices_are_accepted():
    import numpy as np
    model, graph = built("resnet20")
    ref = count_parameters(prune(model, graph, {0: [1, 4], 2: [0]}))
    assert count_parameters(prune(model, graph, {np.int64(0): np.array([1, 4]), 2: torch.tensor([0])})) == ref
    with pytest.raises(PruningError, match="must be a collection of indices, got 3"):
        prune(model, graph, {0: 3})


def test_tied_weights_are_never_untied():
    """A Parameter shared by two layers (conv2, conv3) is refused at discovery: no prune of the model
    can leave one copy cut and the other whole (which raised the parameter count)."""
    net = Tied().eval()
    graph = discover(net, (1, 3, 8, 8))
    assert graph.dfcs == []
    conv1 = next(d for d in graph.unprunable if "conv1" in d.A)
    with pytest.raises(PruningError, match=r"not prunable: module conv2: conv2.weight is tied to conv3.weight"):
        prune(net, graph, {conv1: [0]})


def test_batchnorm_without_affine_or_running_stats_is_pruned():
    net = Chain(affine=False, track_running_stats=False).eval()
    graph = discover(net, (1, 3, 8, 8))
    pruned = prune(net, graph, {0: [0, 3], 1: [5]})
    assert (pruned.bn1.num_features, pruned.bn2.num_features) == (6, 5)
    assert count_parameters(pruned) == predicted_parameters(net, graph, {0: [0, 3], 1: [5]})
    with torch.no_grad():
        assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_grouped_convs_lose_whole_groups_only():
    net = GroupedNet().eval()
    graph = discover(net, (1, 3, 8, 8))
    mid = next(d for d in graph.grouped if d.A == ["c1"])
    removals = {mid: [1, 2]}
    pruned = prune(net, graph, removals)
    assert (pruned.g.groups, pruned.g.in_channels, pruned.g.out_channels, pruned.c1.out_channels) == (2, 4, 6, 4)
    assert count_parameters(pruned) == predicted_parameters(net, graph, removals)
    from pruning_lib.surgery import shrink_module
    with pytest.raises(PruningError, match=r"grouped convolution \(groups=4\) can only lose whole groups"):
        shrink_module(copy.deepcopy(net.g), {0, 1, 2}, {0})                 # group 0's output, half its input
    with pytest.raises(PruningError, match="can only lose whole groups"):
        shrink_module(copy.deepcopy(net.g), {0, 1, 2}, {2, 3})              # group 0's output, group 1's input

"""Physical surgery: pruned models compute exactly what the original computes when the removed
channels carry zero into their readers; random prunes give runnable models of predicted size."""
import random

import pytest
import torch
from torch import nn

from pruning_lib.checkpoints import load_checkpoint, save_checkpoint
from pruning_lib.coupling import discover
from pruning_lib.models import get_model
from pruning_lib.surgery import PruningError, num_parameters, predicted_parameters, prune
from toy_models import BranchNet, CatNet, ShuffleNet

MODELS = {   # name -> (factory, input shape)
    "resnet20": (lambda: get_model("resnet20"), (2, 3, 32, 32)),
    "resnet56": (lambda: get_model("resnet56"), (2, 3, 32, 32)),
    "cifar_resnet50": (lambda: get_model("cifar_resnet50"), (1, 3, 32, 32)),
    "torchvision/resnet18": (lambda: get_model("torchvision/resnet18"), (1, 3, 32, 32)),
    "torchvision/vgg11_bn": (lambda: get_model("torchvision/vgg11_bn"), (1, 3, 32, 32)),
    "torchvision/mobilenet_v2": (lambda: get_model("torchvision/mobilenet_v2"), (1, 3, 32, 32)),
    "torchvision/densenet121": (lambda: get_model("torchvision/densenet121"), (1, 3, 32, 32)),
    "catnet": (CatNet, (2, 3, 8, 8)),
    "branchnet": (BranchNet, (2, 3, 8, 8)),
    "shufflenet": (ShuffleNet, (2, 3, 8, 8)),
}


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """float64, eval mode, random BN statistics and affine terms (so no channel is trivially zero)."""
    g = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
    return model


def silence(model: nn.Module, graph, removals) -> nn.Module:
    """A copy of ``model`` in which the channels to remove carry zero into every reader."""
    import copy
    model = copy.deepcopy(model)
    with torch.no_grad():
        for key, chans in removals.items():
            dfc = graph.dfcs[key]
            for ref in dfc.feed_out:
                model.get_submodule(ref.module).weight[:, ref.indices(chans)] = 0
    return model


def random_removals(graph, rng: random.Random, n_dfcs: int | None = None) -> dict:
    keys = rng.sample(range(len(graph.dfcs)), n_dfcs or rng.randint(1, len(graph.dfcs)))
    out = {}
    for k in keys:
        c = graph.dfcs[k].channels
        if c > 1:
            out[k] = rng.sample(range(c), rng.randint(1, c - 1))
    return out


@pytest.mark.parametrize("name", [n for n in MODELS if n != "torchvision/densenet121"])
def test_every_dfc_pruned_alone_is_exact(name):
    factory, shape = MODELS[name]
    model = randomised(factory(), seed=1)
    graph = discover(model, shape)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rng = random.Random(3)
    for k, dfc in enumerate(graph.dfcs):
        chans = rng.sample(range(dfc.channels), max(1, dfc.channels // 3))
        reference = silence(model, graph, {k: chans})
        pruned = prune(reference, graph, {k: chans})
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), reference(x), rtol=1e-10, atol=1e-10,
                                       msg=lambda m: f"{name} DFC {k}: {m}")
        assert num_parameters(pruned) < num_parameters(reference)


def test_densenet_all_dfcs_at_once_is_exact():
    factory, shape = MODELS["torchvision/densenet121"]
    model = randomised(factory(), seed=1)
    graph = discover(model, shape)
    removals = random_removals(graph, random.Random(4), n_dfcs=len(graph.dfcs))
    reference = silence(model, graph, removals)
    pruned = prune(reference, graph, removals)
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x), rtol=1e-10, atol=1e-10)


def test_fuzz_random_multi_dfc_prunes():
    """At least 200 random prunes of several DFCs at once across the models: each runs and has
    exactly the parameter count predicted from the removed channels."""
    rng = random.Random(0)
    count = 0
    for name, (factory, shape) in MODELS.items():
        model = factory().eval()
        graph = discover(model, shape)
        x = torch.randn(shape)
        trials = 10 if name == "torchvision/densenet121" else 24
        for _ in range(trials):
            removals = random_removals(graph, rng)
            expected = predicted_parameters(model, graph, removals)
            pruned = prune(model, graph, removals)
            assert num_parameters(pruned) == expected, name
            # each feed-in layer lost exactly the channels of its DFCs
            for k, chans in removals.items():
                for ref in graph.dfcs[k].feed_in:
                    m = pruned.get_submodule(ref.module)
                    size = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
                    orig = model.get_submodule(ref.module)
                    orig_size = orig.out_channels if isinstance(orig, nn.Conv2d) else orig.out_features
                    assert size == orig_size - len(set(chans))
            with torch.no_grad():
                assert pruned(x).shape == model(x).shape
            count += 1
    assert count >= 200


def test_caller_model_untouched_unless_inplace():
    model = get_model("resnet20").eval()
    graph = discover(model)
    before = num_parameters(model)
    pruned = prune(model, graph, {0: [0, 1]})
    assert num_parameters(model) == before and num_parameters(pruned) < before
    same = prune(model, graph, {0: [0, 1]}, inplace=True)
    assert same is model and num_parameters(model) == num_parameters(pruned)


def test_refuses_to_empty_a_dfc_or_touch_unprunable_channels():
    model = get_model("resnet20")
    graph = discover(model)
    with pytest.raises(PruningError, match="keep at least one channel"):
        prune(model, graph, {0: range(graph.dfcs[0].channels)})
    with pytest.raises(PruningError, match="network output"):
        prune(model, graph, {graph.unprunable[-1].index: [0]})
    with pytest.raises(PruningError, match="channels 0..15"):
        prune(model, graph, {0: [16]})
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


def test_pruned_model_saves_and_loads(tmp_path):
    model = get_model("resnet56").eval()
    graph = discover(model)
    pruned = prune(model, graph, random_removals(graph, random.Random(5)))
    path = save_checkpoint(tmp_path / "pruned.pt", pruned, "resnet56", {"note": "fuzz"}, pruned=True)
    loaded, meta = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x))
    assert meta["pruned"] and num_parameters(loaded) == num_parameters(pruned)

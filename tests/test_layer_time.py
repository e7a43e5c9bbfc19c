"""Time share of layers with coupled channels: which layers count, and a consistent split of the
measured time (no thresholds on the timings themselves)."""
import pytest
import torch
from torch import nn

from pruning_lib.graph import discover
from pruning_lib.measure.layer_time import coupled_layers, coupled_mac_share, coupled_time_share
from pruning_lib.measure import count_flops
from pruning_lib.course.models import get_model
from toy_models import BranchNet, CatNet


def test_every_conv_of_a_basic_block_resnet_touches_a_stream():
    model = get_model("resnet20")
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert coupled_layers(model, discover(model, (1, 3, 32, 32))) == convs


def test_bottleneck_middle_convs_are_not_coupled():
    model = get_model("cifar_resnet50")
    names = coupled_layers(model, discover(model, (1, 3, 8, 8)))
    assert len(names) == 38             # stem, 16 x (conv1, conv3), 4 shortcut convs, fc
    assert not any(n.endswith("conv2") for n in names) and "fc" in names


def test_toy_models():
    assert coupled_layers(CatNet(), discover(CatNet(), (1, 3, 8, 8))) == []
    net = BranchNet()
    assert coupled_layers(net, discover(net, (1, 3, 8, 8))) == ["stem", "left", "dw", "pw", "head"]


@pytest.mark.parametrize("method", ["profiler", "hooks"])
def test_split_is_consistent_and_model_untouched(method):
    model = get_model("resnet20").train()
    graph = discover(model, (1, 3, 32, 32))
    threads = torch.get_num_threads()
    r = coupled_time_share(model, graph, (2, 3, 32, 32), repeats=2, warmup=1, threads=1, method=method)
    assert r.coupled_layers == coupled_layers(model, graph)
    assert set(r.per_layer_ms) == {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert 0 < r.coupled_ms <= r.layer_ms <= r.total_ms * 1.01
    assert r.share == pytest.approx(r.coupled_ms / r.total_ms) and 0 < r.share <= 1
    assert r.share_of_layers == pytest.approx(1.0)          # every layer of ResNet-20 is coupled
    assert r.method == method and r.threads == 1 and "coupled channels" in str(r)
    assert model.training and torch.get_num_threads() == threads
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_no_coupled_layers_means_zero_share():
    net = CatNet()
    r = coupled_time_share(net, discover(net, (1, 3, 8, 8)), (2, 3, 8, 8), repeats=1, warmup=0, method="hooks")
    assert r.coupled_ms == 0 and r.share == 0 and r.layer_ms > 0


def test_bad_arguments_are_explained():
    model = get_model("resnet20")
    with pytest.raises(ValueError, match="graph does not describe this model"):
        coupled_time_share(CatNet(), discover(model, (1, 3, 32, 32)), (1, 3, 8, 8))
    with pytest.raises(ValueError, match="repeats"):
        coupled_time_share(model, discover(model, (1, 3, 32, 32)), repeats=0)


@pytest.mark.parametrize("name,share", [("resnet20", 1.0), ("cifar_resnet50", 0.5346)])
def test_mac_share_agrees_with_the_flop_counter(name, share):
    model = get_model(name)
    r = coupled_mac_share(model, discover(model, (1, 3, 32, 32)))
    assert 2 * r.macs == count_flops(model, (1, 3, 32, 32))      # torch.utils.flop_counter: 2 FLOPs per MAC
    assert r.share == pytest.approx(share, abs=1e-4)

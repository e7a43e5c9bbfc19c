"""pruning_lib.pruning.channel_cost: one-channel costs by physical surgery, stages by resolution, order profiles."""
from __future__ import annotations

import pytest
import torch

from pruning_lib.pruning.channel_cost import dfc_costs, order_profile, stages
from pruning_lib.graph import discover
from pruning_lib.scoring import get_criterion
from pruning_lib.course.models import get_model


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    model = get_model("resnet20").eval()
    return model, discover(model, (1, 3, 32, 32))


def test_costs_by_hand_and_places(resnet20):
    model, graph = resnet20
    before = {k: v.clone() for k, v in model.state_dict().items()}
    costs = dfc_costs(model, graph)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())     # not modified
    assert sorted(c.where for c in costs) == sorted(["block s1"] * 3 + ["block s2"] * 3 + ["block s3"] * 3
                                                    + ["stream s1", "stream s2", "stream s3"])
    block = next(c for c in costs if c.where == "block s1")
    # a channel between a block's two 3x3 convs (16 channels, 32x32): its filter in conv1 and its
    # input slice in conv2, 16 * 9 weights each, 1,024 positions, 2 FLOPs per multiply-add
    assert block.flops_per_channel == 2 * 2 * 16 * 9 * 32 * 32
    assert block.params_per_channel == 2 * 16 * 9 + 2                                # + BN weight and bias
    for s in (1, 2, 3):
        stream = next(c for c in costs if c.where == f"stream s{s}")
        assert stream.flops_per_channel > 2 * next(c for c in costs if c.where == f"block s{s}").flops_per_channel
    assert set(stages(graph).values()) == {1, 2, 3}


def test_order_profile_counts_the_head(resnet20):
    model, graph = resnet20
    costs = dfc_costs(model, graph)
    for name in ("dfpc", "dfpc_mean", "l1"):
        p = order_profile(get_criterion(name)(model, graph), graph, costs, head_fraction=0.5)
        assert p.method == name and p.length == sum(c.channels - 1 for c in costs)
        assert sum(p.head_by_place.values()) == p.head == round(0.5 * p.length)
        assert p.coupled_in_head == sum(n for k, n in p.head_by_place.items() if k.startswith("stream"))
        assert p.first_coupled is not None and 1 <= p.first_coupled <= p.length
    total = order_profile(get_criterion("dfpc")(model, graph), graph, costs)
    mean = order_profile(get_criterion("dfpc_mean")(model, graph), graph, costs)
    assert mean.first_coupled < total.first_coupled
    with pytest.raises(ValueError, match="head_fraction"):
        order_profile(get_criterion("l1")(model, graph), graph, costs, head_fraction=0)


def test_gamma_summary_counts_dead_channels():
    from torch import nn

    from pruning_lib.pruning.channel_cost import gamma_summary
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.005, -0.005, 0.05, 0.5, 1.0, 1.0, 2.0, 0.001]))
        model[1].bias.copy_(torch.tensor([-0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3]))   # the last: alive (beta > 0)
    s = gamma_summary(model)
    assert s.channels == 12 and s.dead == pytest.approx(2 / 12, abs=1e-4) and s.below_0_1 == pytest.approx(4 / 12, abs=1e-4)
    assert s.median == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no affine BatchNorm"):
        gamma_summary(nn.Sequential(nn.Conv2d(3, 3, 1)))

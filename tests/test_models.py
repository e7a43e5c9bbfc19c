"""pruning_lib.course.models: the registry and the CIFAR ResNets' exact architectures."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_lib.course.models import BasicBlock, Bottleneck, CIFAR_MODELS, CifarResNet, get_model, list_models

# Trainable parameters (weights, biases, BN affine); counted from the definitions.
PARAMS = {
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet44": 661_338,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "cifar_resnet18": 11_173_962,
    "cifar_resnet50": 23_520_842,
    "cifar_resnet101": 42_512_970,
}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_every_model():
    assert list_models() == list(PARAMS)
    assert set(CIFAR_MODELS) == set(PARAMS)


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_forward(name):
    m = get_model(name).eval()
    assert isinstance(m, CifarResNet)
    assert n_params(m) == PARAMS[name]
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_depths_and_blocks():
    depth = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
    for name, d in depth.items():
        m = get_model(name)
        blocks = [b for b in m.modules() if isinstance(b, BasicBlock)]
        assert 2 * len(blocks) + 2 == d                               # stem + 2 convs/block + fc
        projections = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
        assert len(projections) == 2                                  # where width/stride changes
    r50 = get_model("cifar_resnet50")
    assert sum(isinstance(b, Bottleneck) for b in r50.modules()) == 16
    assert r50.fc.in_features == 2048
    assert r50.conv1.kernel_size == (3, 3) and r50.conv1.stride == (1, 1)   # CIFAR stem, no max-pool
    assert not any(isinstance(m, nn.MaxPool2d) for m in r50.modules())


def test_num_classes():
    m = get_model("resnet20", num_classes=100)
    assert m.fc.out_features == 100
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 100)


def test_fresh_models_are_seeded_by_torch():
    torch.manual_seed(1)
    a = get_model("resnet20")
    torch.manual_seed(1)
    b = get_model("resnet20")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_torchvision_models_by_prefix():
    assert "torchvision/resnet18" in list_models(include_torchvision=True)
    m = get_model("torchvision/resnet18")
    from torchvision.models import ResNet
    assert isinstance(m, ResNet) and m.fc.out_features == 10
    assert n_params(m) == 11_181_642          # torchvision's ResNet-18 with a 10-class head
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_names():
    with pytest.raises(ValueError, match="resnet21"):
        get_model("resnet21")
    with pytest.raises(ValueError, match="torchvision has no"):
        get_model("torchvision/resnet19")

"""Model registry: the course's CIFAR ResNets by name, and torchvision's CNNs as ``torchvision/<name>``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from . import cifar_resnet
from .cifar_resnet import BasicBlock, Bottleneck, CifarResNet

CIFAR_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": cifar_resnet.resnet20,
    "resnet32": cifar_resnet.resnet32,
    "resnet44": cifar_resnet.resnet44,
    "resnet56": cifar_resnet.resnet56,
    "resnet110": cifar_resnet.resnet110,
    "cifar_resnet18": cifar_resnet.cifar_resnet18,
    "cifar_resnet50": cifar_resnet.cifar_resnet50,
    "cifar_resnet101": cifar_resnet.cifar_resnet101,
}
TORCHVISION_PREFIX = "torchvision/"


def list_models(include_torchvision: bool = False) -> list[str]:
    """Registered names; with ``include_torchvision`` also torchvision's classification models."""
    names = list(CIFAR_MODELS)
    if include_torchvision:
        import torchvision
        names += [TORCHVISION_PREFIX + n for n in torchvision.models.list_models(torchvision.models)]
    return names


def get_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """A freshly initialised model by registry name (``resnet56``, ``torchvision/resnet50``, ...)."""
    if name in CIFAR_MODELS:
        return CIFAR_MODELS[name](num_classes=num_classes, **kwargs)
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision
        tv_name = name[len(TORCHVISION_PREFIX):]
        if tv_name not in torchvision.models.list_models(torchvision.models):
            raise ValueError(f"torchvision has no classification model {tv_name!r}")
        return torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown model {name!r}; registered: {', '.join(CIFAR_MODELS)}, "
                   f"or '{TORCHVISION_PREFIX}<name>' for a torchvision model")


__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "CIFAR_MODELS", "get_model", "list_models"]

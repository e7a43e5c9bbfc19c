"""What the library knows about each layer type, in one place: one handler per kind of layer.

The lowest layer of the library above its foundations (see docs/architecture.md): discovery
(:mod:`pruning_lib.graph`), surgery, scoring and measures all ask it; it imports none of them.

Every per-layer question (how many channels in and out, how to shrink it, how many parameters it
keeps after a cut, its multiply-accumulates, how to rebuild it from a saved state_dict, what role
it plays in a data flow coupling) is answered by the layer's handler, found with
:func:`handler_for`. Kinds: a dense ``Conv2d`` and a ``Linear`` create channels (feed-in/feed-out
layers of a DFC, DFPC section 3); a ``BatchNorm`` and a depthwise ``Conv2d`` act channel by channel
(dependent layers); a grouped ``Conv2d`` couples its input and output by whole groups; a
``LayerNorm`` normalises its channels together; attention layers have heads as a unit. To teach
the library a new layer type, write a :class:`LayerHandler` and :func:`register_handler` it.

Modules: :mod:`.base` (roles, the protocol, tensor helpers), :mod:`.standard` (torch.nn's conv,
linear and norm layers), :mod:`.attention` (``nn.MultiheadAttention``, MaxViT's and Swin's
attention); this package holds the registry.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .attention import HeadPrunedMultiheadAttention, MultiheadAttentionHandler, torchvision_attention
from .base import (ATTENTION, CHANNELWISE, GROUPED, NORMALISING, PRODUCER, LayerHandler, PruningError, index,
                   slice_tensor)
from .standard import (BatchNormHandler, ConvHandler, DepthwiseConvHandler, GroupedConvHandler, LayerNormHandler,
                       LinearHandler, conv_handler)

# registered layer types outside torch.nn (traced as leaves), and this package's own layer types
_USER_TYPES: set[type] = {HeadPrunedMultiheadAttention}
_REGISTRY: dict[type, Callable[[nn.Module], LayerHandler]] = {
    nn.Conv2d: conv_handler,
    nn.Linear: lambda m, h=LinearHandler(): h,
    nn.modules.batchnorm._BatchNorm: lambda m, h=BatchNormHandler(): h,
    nn.LayerNorm: lambda m, h=LayerNormHandler(): h,
    nn.MultiheadAttention: lambda m, h=MultiheadAttentionHandler(): h,
}
# this package's handlers (known to replace, never mutate, tensors)
_BUILTIN: set[type] = {ConvHandler, GroupedConvHandler, DepthwiseConvHandler, LinearHandler, BatchNormHandler,
                       LayerNormHandler, MultiheadAttentionHandler}


def register_handler(layer_type: type, handler: LayerHandler | Callable[[nn.Module], LayerHandler]) -> None:
    """Teach the library a layer type: ``handler`` (or a function of the module giving one) answers
    for ``layer_type`` and its subclasses."""
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"register_handler needs an nn.Module subclass, got {layer_type!r}")
    if not layer_type.__module__.startswith("torch."):
        _USER_TYPES.add(layer_type)           # torch.fx would trace through it: make it a leaf
    _REGISTRY[layer_type] = handler if callable(handler) and not isinstance(handler, LayerHandler) \
        else (lambda m, h=handler: h)


def handler_for(m: nn.Module) -> LayerHandler | None:
    """The handler of ``m``'s type (looked up along its class hierarchy), or None for a layer without
    channels of its own to cut (activations, pooling, containers)."""
    for cls in type(m).__mro__:
        make = _REGISTRY.get(cls)
        if make is not None:
            return make(m)
    return None


def is_user_type(m: nn.Module) -> bool:
    """Whether ``m``'s type (or a base) was registered with :func:`register_handler` from outside
    torch.nn: discovery keeps such a module a leaf and treats it by its handler's role."""
    return bool(_USER_TYPES) and any(cls in _USER_TYPES for cls in type(m).__mro__)


def is_builtin(h: LayerHandler) -> bool:
    """Whether ``h`` is one of this package's handlers (known to replace, never mutate, tensors)."""
    return type(h) in _BUILTIN


def kind_of(m: nn.Module) -> str | None:
    """``"conv"``, ``"grouped_conv"``, ``"depthwise_conv"``, ``"linear"``, ``"batchnorm"``, ``"layernorm"``,
    ``"attention"`` or None."""
    h = handler_for(m)
    return h.kind if h is not None else None


def is_weighted(m: nn.Module) -> bool:
    """A conv or linear layer (its own multiply-accumulates; what the timing and MAC counts cover)."""
    h = handler_for(m)
    return h is not None and h.macs_per_output(m) is not None


def is_batchnorm(m: nn.Module) -> bool:
    return kind_of(m) == "batchnorm"


def _register_torchvision() -> dict[str, type]:
    """torchvision's attention blocks (MaxViT, Swin) with heads as a unit; their head-pruned classes."""
    handlers, classes = torchvision_attention()
    for layer_type, handler in handlers.items():
        register_handler(layer_type, handler)
        _BUILTIN.add(type(handler))
    return classes


globals().update(_register_torchvision())      # HeadPrunedRelativeAttention, HeadPrunedWindowAttention(V2)

__all__ = ["LayerHandler", "ConvHandler", "GroupedConvHandler", "DepthwiseConvHandler", "LinearHandler",
           "BatchNormHandler", "LayerNormHandler", "MultiheadAttentionHandler", "HeadPrunedMultiheadAttention",
           "HeadPrunedRelativeAttention", "HeadPrunedWindowAttention", "HeadPrunedWindowAttentionV2",
           "NORMALISING", "ATTENTION", "slice_tensor", "index", "PruningError", "register_handler", "handler_for",
           "kind_of", "is_weighted", "is_batchnorm", "is_user_type", "is_builtin", "PRODUCER", "CHANNELWISE",
           "GROUPED"]

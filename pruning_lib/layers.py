"""What the library knows about each layer type, in one place: one handler per kind of layer.

The lowest layer of the library above its foundations (see docs/architecture.md): discovery
(:mod:`pruning_lib.graph`), surgery, scoring and measures all ask it; it imports none of them.

Every per-layer question (how many channels in and out, how to shrink it, how many parameters it
keeps after a cut, its multiply-accumulates, how to rebuild it from a saved state_dict, what role
it plays in a data flow coupling) is answered by the layer's handler, found with
:func:`handler_for`. Kinds: a dense ``Conv2d`` and a ``Linear`` create channels (feed-in/feed-out
layers of a DFC, DFPC section 3); a ``BatchNorm`` and a depthwise ``Conv2d`` act channel by channel
(dependent layers); a grouped ``Conv2d`` couples its input and output by whole groups. To teach
the library a new layer type, write a :class:`LayerHandler` and :func:`register_handler` it.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
from torch import nn

# Roles a layer plays in the channel graph.
PRODUCER = "producer"           # reads channels and creates new ones (conv, linear)
CHANNELWISE = "channelwise"     # channel k in -> channel k out (BatchNorm, depthwise conv)
GROUPED = "grouped"             # input group j -> output group j (a grouped conv)


def _keep(n: int, drop: set[int], device) -> torch.Tensor:
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long, device=device)


def _param(t: torch.Tensor, like: torch.Tensor) -> nn.Parameter:
    """``t`` (from index_select: new memory, no copy needed to detach it) as a Parameter with the
    requires_grad and the memory format (channels_last or not) of the tensor it replaces."""
    fmt = torch.channels_last if (like.dim() == 4 and t.dim() == 4 and not like.is_contiguous()
                                  and like.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format
    return nn.Parameter(t.contiguous(memory_format=fmt), requires_grad=like.requires_grad)


def _fresh(shape, like: torch.Tensor, param: bool = True) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` where ``like`` lives: its dtype, device, requires_grad
    (for a reload by load_state_dict, which fills it)."""
    t = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    return nn.Parameter(t, requires_grad=like.requires_grad) if param else t


class PruningError(ValueError):
    """A pruning request that cannot be carried out (the message says why and what to do)."""


class LayerHandler:
    """Per-layer-type knowledge. Subclasses set ``kind`` and ``role`` and implement the methods."""
    kind: str = ""
    role: str = ""
    spatial: bool = False                    # reads (N, C, H, W) maps: refuses a flattened input
    tensors: tuple[str, ...] = ("weight", "bias")   # what :meth:`shrink` replaces

    def sizes(self, m: nn.Module) -> tuple[int, int]:
        """(input channels, output channels)."""
        raise NotImplementedError

    def out_channels(self, m: nn.Module) -> int:
        return self.sizes(m)[1]

    def shrink(self, m: nn.Module, out_drop: set[int], in_drop: set[int]) -> None:
        """Delete output indices ``out_drop`` and input indices ``in_drop``, in place."""
        raise NotImplementedError

    def parameters_after(self, m: nn.Module, n_out: int, n_in: int) -> int:
        """Parameters ``m`` keeps when ``n_out`` outputs and ``n_in`` inputs are cut."""
        raise NotImplementedError

    def macs_per_output(self, m: nn.Module) -> int | None:
        """Multiply-accumulates per output element (None: not a weighted layer)."""
        return None

    def resize(self, m: nn.Module, state: dict, prefix: str) -> None:
        """Rebuild ``m`` in place at the shapes found in ``state`` (a pruned model's state_dict);
        nothing when ``state`` holds no tensors for it."""
        raise NotImplementedError

    def replaced_tensors(self, m: nn.Module) -> list[torch.Tensor]:
        """The tensors of ``m`` that :meth:`shrink` swaps for new, smaller ones."""
        return [t for t in (getattr(m, n, None) for n in self.tensors) if isinstance(t, torch.Tensor)]

    def _shrink_bias(self, m: nn.Module, keep_out: torch.Tensor) -> None:
        if m.bias is not None:
            m.bias = _param(m.bias.data.index_select(0, keep_out), m.bias)


class ConvHandler(LayerHandler):
    """A dense ``Conv2d`` (groups = 1): output filter k and input slice k can go independently."""
    kind, role, spatial = "conv", PRODUCER, True

    def sizes(self, m):
        return m.in_channels, m.out_channels

    def _shrink_weight(self, m: nn.Conv2d, out_drop, in_drop) -> torch.Tensor:
        keep_in = _keep(m.in_channels, in_drop, m.weight.device)
        m.in_channels = len(keep_in)
        return m.weight.data.index_select(1, keep_in)

    def shrink(self, m, out_drop, in_drop):
        keep_out = _keep(m.out_channels, out_drop, m.weight.device)
        m.weight = _param(self._shrink_weight(m, out_drop, in_drop).index_select(0, keep_out), m.weight)
        m.out_channels = len(keep_out)
        self._shrink_bias(m, keep_out)

    def _in_per_group(self, m: nn.Conv2d, n_in: int) -> int:
        return m.in_channels - n_in

    def parameters_after(self, m, n_out, n_in):
        out_c = m.out_channels - n_out
        k = m.kernel_size[0] * m.kernel_size[1]
        return out_c * self._in_per_group(m, n_in) * k + (out_c if m.bias is not None else 0)

    def macs_per_output(self, m):
        return m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def _groups_after(self, m: nn.Conv2d, out_c: int) -> int:
        return m.groups

    def resize(self, m, state, prefix):
        w = state.get(prefix + "weight")
        if w is None or w.shape == m.weight.shape:
            return
        out_c, in_per_group = w.shape[:2]
        groups = self._groups_after(m, out_c)
        m.out_channels, m.in_channels, m.groups = out_c, in_per_group * groups, groups
        m.weight = _fresh(w.shape, m.weight)
        if m.bias is not None and m.bias.shape[0] != out_c:
            m.bias = _fresh((out_c,), m.bias)


class GroupedConvHandler(ConvHandler):
    """A grouped ``Conv2d`` (1 < groups, not depthwise): it loses whole groups, the same ones on its
    input and output side; the weight's input slices stay."""
    kind, role = "grouped_conv", GROUPED

    def _shrink_weight(self, m, out_drop, in_drop):
        i, o = m.in_channels // m.groups, m.out_channels // m.groups
        gone = {c // o for c in out_drop}
        if ({c // i for c in in_drop} != gone or len(out_drop) != o * len(gone) or len(in_drop) != i * len(gone)):
            raise PruningError(f"grouped convolution (groups={m.groups}) can only lose whole groups, the same "
                               "on its input and output side: prune it through its DFC in graph.grouped")
        m.groups -= len(gone)
        m.in_channels -= len(in_drop)
        return m.weight.data

    def _in_per_group(self, m, n_in):
        return m.in_channels // m.groups

    def _groups_after(self, m, out_c):
        return out_c // (m.out_channels // m.groups)          # whole groups of the same width gone


class DepthwiseConvHandler(GroupedConvHandler):
    """A depthwise ``Conv2d`` (groups = in = out channels): channel k in -> channel k out, so it is a
    dependent layer that shrinks its channels and ``groups`` together."""
    kind, role = "depthwise_conv", CHANNELWISE

    def _shrink_weight(self, m, out_drop, in_drop):
        m.groups = m.in_channels = m.out_channels - len(out_drop)
        return m.weight.data

    def _groups_after(self, m, out_c):
        return out_c                        # depthwise stays depthwise


class LinearHandler(LayerHandler):
    """A ``Linear`` layer: output feature k and input feature k can go independently."""
    kind, role = "linear", PRODUCER

    def sizes(self, m):
        return m.in_features, m.out_features

    def shrink(self, m, out_drop, in_drop):
        dev = m.weight.device
        keep_out = _keep(m.out_features, out_drop, dev)
        keep_in = _keep(m.in_features, in_drop, dev)
        m.weight = _param(m.weight.data.index_select(0, keep_out).index_select(1, keep_in), m.weight)
        self._shrink_bias(m, keep_out)
        m.out_features, m.in_features = len(keep_out), len(keep_in)

    def parameters_after(self, m, n_out, n_in):
        out_f = m.out_features - n_out
        return out_f * (m.in_features - n_in) + (out_f if m.bias is not None else 0)

    def macs_per_output(self, m):
        return m.in_features

    def resize(self, m, state, prefix):
        w = state.get(prefix + "weight")
        if w is None or w.shape == m.weight.shape:
            return
        m.out_features, m.in_features = w.shape
        m.weight = _fresh(w.shape, m.weight)
        if m.bias is not None and m.bias.shape[0] != w.shape[0]:
            m.bias = _fresh((w.shape[0],), m.bias)


class BatchNormHandler(LayerHandler):
    """A ``BatchNorm`` layer (any dimension): entry k of its affine parameters and running statistics."""
    kind, role = "batchnorm", CHANNELWISE
    tensors = ("weight", "bias", "running_mean", "running_var")

    def sizes(self, m):
        return m.num_features, m.num_features

    def shrink(self, m, out_drop, in_drop):
        state = [t for t in (m.running_mean, m.weight) if t is not None]
        keep = _keep(m.num_features, out_drop, state[0].device if state else "cpu")
        if m.affine:
            m.weight = _param(m.weight.data.index_select(0, keep), m.weight)
            self._shrink_bias(m, keep)
        if m.running_mean is not None:
            m.running_mean = m.running_mean.index_select(0, keep)
            m.running_var = m.running_var.index_select(0, keep)
        m.num_features = len(keep)

    def parameters_after(self, m, n_out, n_in):
        return sum(p.numel() for p in m.parameters(recurse=False)) - (2 * n_out if m.affine else 0)

    def resize(self, m, state, prefix):
        sized = next((state[prefix + k] for k in ("running_mean", "weight") if prefix + k in state), None)
        if sized is None or sized.shape[0] == m.num_features:
            return
        n = sized.shape[0]
        m.num_features = n
        if m.affine:
            m.weight = _fresh((n,), m.weight)
            m.bias = _fresh((n,), m.bias)
        if m.running_mean is not None:
            m.running_mean = _fresh((n,), m.running_mean, param=False).zero_()
            m.running_var = _fresh((n,), m.running_var, param=False).fill_(1)


def _conv_handler(m: nn.Conv2d) -> LayerHandler:
    """A depthwise conv pruned to one channel has groups = 1 and is then read as an ordinary 1 -> 1
    conv, a DFC of its own: the two cannot be told apart. Either way that channel stays, since a
    DFC's last channel is never removed."""
    if m.groups == 1:
        return _CONV
    if m.groups == m.in_channels == m.out_channels:
        return _DEPTHWISE
    return _GROUPED_CONV


_CONV, _GROUPED_CONV, _DEPTHWISE = ConvHandler(), GroupedConvHandler(), DepthwiseConvHandler()
_BUILTIN = (ConvHandler, GroupedConvHandler, DepthwiseConvHandler, LinearHandler, BatchNormHandler)
_USER_TYPES: set[type] = set()          # registered layer types outside torch.nn (traced as leaves)
_REGISTRY: dict[type, Callable[[nn.Module], LayerHandler]] = {
    nn.Conv2d: _conv_handler,
    nn.Linear: lambda m, h=LinearHandler(): h,
    nn.modules.batchnorm._BatchNorm: lambda m, h=BatchNormHandler(): h,
}


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
    """Whether ``h`` is one of this module's handlers (known to replace, never mutate, tensors)."""
    return type(h) in _BUILTIN


def kind_of(m: nn.Module) -> str | None:
    """``"conv"``, ``"grouped_conv"``, ``"depthwise_conv"``, ``"linear"``, ``"batchnorm"`` or None."""
    h = handler_for(m)
    return h.kind if h is not None else None


def is_weighted(m: nn.Module) -> bool:
    """A conv or linear layer (its own multiply-accumulates; what the timing and MAC counts cover)."""
    h = handler_for(m)
    return h is not None and h.macs_per_output(m) is not None


def is_batchnorm(m: nn.Module) -> bool:
    return kind_of(m) == "batchnorm"


def index(x, what: str) -> int:
    """``x`` as a plain int: ints, NumPy integers and one-element integer tensors; not bools,
    floats or strings (``int()`` would silently turn 1.7 into 1 and '3' into 3)."""
    if not isinstance(x, bool) and "bool" not in str(getattr(x, "dtype", "")):
        try:
            return operator.index(x)
        except TypeError:
            pass
    raise PruningError(f"{what} must be a plain integer index, got {x!r} ({type(x).__name__})")


__all__ = ["LayerHandler", "ConvHandler", "GroupedConvHandler", "DepthwiseConvHandler", "LinearHandler",
           "BatchNormHandler", "PruningError", "register_handler", "handler_for", "kind_of", "is_weighted",
           "is_batchnorm", "is_user_type", "is_builtin", "PRODUCER", "CHANNELWISE", "GROUPED"]

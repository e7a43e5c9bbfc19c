"""The pieces every layer handler is made of: the roles a layer plays in the channel graph, the
:class:`LayerHandler` protocol, and the tensor helpers a handler's ``shrink`` and ``resize`` use."""
from __future__ import annotations

import operator

import torch
from torch import nn

__all__ = ["PRODUCER", "CHANNELWISE", "GROUPED", "NORMALISING", "ATTENTION", "PruningError", "LayerHandler",
           "slice_tensor", "index"]

# Roles a layer plays in the channel graph.
PRODUCER = "producer"           # reads channels and creates new ones (conv, linear)
CHANNELWISE = "channelwise"     # channel k in -> channel k out (BatchNorm, depthwise conv)
GROUPED = "grouped"             # input group j -> output group j (a grouped conv)
NORMALISING = "normalising"     # normalises its channels together (LayerNorm): no exact removal
ATTENTION = "attention"         # reads and writes channels like a Linear, and has heads as a unit


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
    axis: int = 1                            # the tensor axis of its channels (-1: the last, a Linear)
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


def slice_tensor(owner: nn.Module, name: str, axis: int, drop: set[int]) -> None:
    """Delete indices ``drop`` along ``axis`` of ``owner``'s own parameter or buffer ``name`` (a layer
    scale, a token), replacing it by a new tensor with the same requires_grad."""
    t = getattr(owner, name)
    keep = _keep(t.shape[axis], drop, t.device)
    if name in owner._parameters:
        owner._parameters[name] = _param(t.data.index_select(axis, keep), t)
    else:
        owner._buffers[name] = t.index_select(axis, keep)


def index(x, what: str) -> int:
    """``x`` as a plain int: ints, NumPy integers and one-element integer tensors; not bools,
    floats or strings (``int()`` would silently turn 1.7 into 1 and '3' into 3)."""
    if not isinstance(x, bool) and "bool" not in str(getattr(x, "dtype", "")):
        try:
            return operator.index(x)
        except TypeError:
            pass
    raise PruningError(f"{what} must be a plain integer index, got {x!r} ({type(x).__name__})")

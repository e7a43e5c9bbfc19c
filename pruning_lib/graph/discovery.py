"""Discovery of data flow couplings (DFCs) from a model's traced graph (DFPC, Narshana et al. 2023).

A DFC (A, D, B) is a set of channels shared by the feed-in layers A (whose output channel k flows
in), the dependent per-channel layers D on the way (BatchNorm, depthwise convs) and the feed-out
layers B (whose input channel k is read). Between A and B every operation acts channel by channel
(activations, pooling, residual additions, identity shortcuts), so channel k can only be removed
from all of them at once. A DFC is *coupled* when |A| > 1 or |B| > 1.

How: the model is traced with ``torch.fx`` and its shapes propagated from an example input (on
the ``meta`` device: shapes without arithmetic). Each
feed-in layer creates an atomic channel space; channel-wise operations pass spaces through,
additions unify them (union-find), concatenations along channels lay them side by side (offsets
into the reader), flatten scales them by the spatial size (a Linear reads C*H*W features).
Operations the graph does not understand make the spaces they touch unprunable, with the reason;
so does any operation whose output channel count disagrees with the layout followed so far.
Ops returning several tensors (``chunk``, ``split``, ``unbind``, ``max(dim)``, ``sort``, ``topk``,
function or method form) are followed through their getitems when they work along a spatial dim
and refused along the batch or channel axis (a max over channels mixes them); padding along
channels and 2-D pools of 3-D tensors (which pool across channels) are refused too. Layers named
in ``leaf_modules``, parametrised ones (weight_norm, spectral_norm), ones with tied weights and ones
whose parameters the graph also reads directly keep their channels whole.
Channels need not lie on axis 1: a Linear acts on the last axis of tokens (N, L, C) or of a
channels-last map (N, H, W, C); permute / transpose move the channel axis, reshapes that keep it
whole map it to its new place; a model tensor broadcast over the channels (a layer scale, a class
token, a positional embedding) is sliced with them when nothing else reads it. Attention modules
with a handler (``nn.MultiheadAttention``, MaxViT's relative attention) read and write channels
like a Linear and have their heads as a DFC of their own (head j: its q, k, v rows and output
columns). A LayerNorm over the channels is refused (it mixes them: no removal is exact) unless
``inexact_norms=True``. See docs/transformers.md.
A grouped (non-depthwise) convolution reads input group j only into output group j, so its input
and output channels are one space pruned by whole groups: such DFCs, whose channel is a block of
``ChannelRef.block`` layer channels, are listed apart in ``ChannelGraph.grouped`` (prune() takes
them; the scoring criteria, written for one channel per unit, see only ``ChannelGraph.dfcs``).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..modes import eval_mode, kept_modes, unmaterialised
from ..sources import input_shape_for

from .propagation import Propagation
from .tracing import ShapeError, frozen_modules, propagate_shapes, trace
from .types import ChannelGraph, UntraceableModelError


def discover(model: nn.Module, input_shape: tuple | None = None, leaf_modules: Iterable = (),
             inexact_norms: bool = False) -> ChannelGraph:
    """Every DFC of ``model``, found on its ``torch.fx`` graph at an input of ``input_shape``.

    The model is not modified (every submodule's train/eval mode is restored; a model with lazy
    modules is traced as a copy, so its parameters stay uninitialised). It is traced in its own
    mode and, when a forward branches on ``self.training``, in the other mode too: the trace that
    calls every layer the other one calls is used (a training-only auxiliary head then belongs to
    its DFCs), and an error names the layers when neither does. ``leaf_modules``: submodule
    names or types to keep opaque (for parts torch.fx cannot trace); their channels stay whole,
    as do those of parametrised layers, of layers with forward hooks and of layers sharing
    (tying) a Parameter. The model must take one tensor (see the error for a wrapper).

    Channels a LayerNorm normalises together are refused: no removal of them is exact.
    ``inexact_norms=True`` makes such LayerNorm modules dependent layers instead (their affine
    entries go with the channels, as Torch-Pruning does); those DFCs list why in ``DFC.inexact``,
    and :func:`pruning_lib.surgery.output_change` measures what a prune of them changes.
    """
    input_shape = input_shape_for(input_shape, None, "discover(model, input_shape)")
    leaf_modules = tuple(leaf_modules)
    model = unmaterialised(model)                    # the shape pass would materialise lazy modules
    gm = _trace_modes(model, leaf_modules)
    try:
        with eval_mode(model):
            p = next(model.parameters(), None)
            x = torch.zeros(input_shape, dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32,
                            device=p.device if p is not None else "cpu")
            propagate_shapes(gm, x)
    except Exception as e:
        what = str(e) if isinstance(e, ShapeError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"running {type(model).__name__} on an input of shape {tuple(input_shape)} "
                         f"failed {what}. Pass the input_shape the model expects (N, C, H, W), "
                         "e.g. (1, 3, 32, 32) for CIFAR models.") from e
    return Propagation(gm, frozen_modules(model, gm, leaf_modules), inexact_norms).run(tuple(input_shape))


def _trace_modes(model: nn.Module, leaf_modules: tuple):
    """The trace in the model's own modes, or the train/eval-mode trace that calls every layer the
    others call (a forward branching on ``self.training`` is specialised by tracing)."""
    own = trace(model, leaf_modules)
    traces = [own]
    with kept_modes(model):
        for mode in (True, False):
            if any(m.training != mode for m in model.modules()):
                model.train(mode)
                traces.append(trace(model, leaf_modules))
    called = [{n.target for n in t.graph.nodes if n.op == "call_module"} for t in traces]
    every = set().union(*called)
    if called[0] == every:
        return own
    for t, c in zip(traces, called):
        if c == every:
            return t
    only = sorted(every - called[0])
    raise UntraceableModelError(
        f"{type(model).__name__}.forward calls different layers in train and eval mode (e.g. {only[:4]}), "
        "and neither mode calls them all: the channel graph would miss some readers. Pass the modules "
        "that branch on self.training in leaf_modules=[...] (their channels are then kept whole)")


__all__ = ["discover"]

"""Physical channel surgery: remove DFC channels so that layers become really smaller.

Pruning channel k of a DFC (A, D, B) deletes output filter k of every feed-in layer in A, entry k of
every dependent layer in D (BatchNorm; a depthwise conv shrinks its channels and ``groups``), and
input slice k of every feed-out layer in B (DFPC, Narshana et al. 2023, section 3). In a DFC of
``ChannelGraph.grouped`` channel k is a whole group: a grouped conv loses that group's input and
output channels and one of its ``groups``.
"""
from __future__ import annotations

import copy
import functools
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..graph.types import DEPENDENT, FEED_IN, FEED_OUT, GROUPED_IN, HEAD_IN, HEAD_OUT, PARAM, DFC, ChannelGraph
from ..layers import PruningError, handler_for, index, is_builtin, is_weighted, slice_tensor


def _as_dfc(graph: ChannelGraph, key) -> DFC:
    every = graph.dfcs + graph.unprunable + graph.grouped
    if isinstance(key, DFC):
        if not any(key is d for d in every):
            raise PruningError(f"DFC #{key.index} (A={key.A}) is not a DFC of this graph: it comes from "
                               "another (or an older) discovery. Use the DFCs of the graph you pass "
                               "(graph.dfcs), rediscovering after each prune")
        return key
    i = index(key, "a DFC key")
    if not 0 <= i < len(every):
        raise PruningError(f"no DFC {key!r} in this graph (it has DFCs 0..{len(every) - 1})")
    return every[i]


def _channels(dfc: DFC, channels) -> set[int]:
    """The requested channel indices of ``dfc``, checked to be integers in range."""
    try:
        chans = {index(c, f"a channel of DFC #{dfc.index}") for c in channels}
    except TypeError:
        raise PruningError(f"the channels of DFC #{dfc.index} must be a collection of indices, "
                           f"got {channels!r}") from None
    bad = sorted(c for c in chans if not 0 <= c < dfc.channels)
    if bad:
        raise PruningError(f"DFC #{dfc.index} has channels 0..{dfc.channels - 1}; got {bad[0]}..{bad[-1]}")
    return chans


def plan(graph: ChannelGraph, removals: Mapping) -> dict[str, dict[str, set[int]]]:
    """Per module, the output ('out') and input ('in') indices to delete; checks the request
    (a DFC given twice, by index and by object, counts once with the union of its channels).
    A model tensor sliced with the channels (a layer scale, a token: a ``PARAM`` ref) is keyed by
    its qualified name, its indices under 'out' and the axis they lie on under 'axis'."""
    per_dfc: dict[DFC, set[int]] = {}
    for key, channels in removals.items():
        dfc = _as_dfc(graph, key)
        chans = _channels(dfc, channels)
        if chans and not dfc.prunable:
            raise PruningError(f"DFC #{dfc.index} is not prunable: {'; '.join(dfc.reasons)}")
        per_dfc.setdefault(dfc, set()).update(chans)
    cut: dict[str, dict[str, set[int]]] = defaultdict(lambda: {"out": set(), "in": set()})
    for dfc, chans in per_dfc.items():
        if not chans:
            continue
        if len(chans) >= dfc.channels:
            raise PruningError(f"removing all {dfc.channels} channels of DFC #{dfc.index} "
                               f"(A={dfc.A}) would cut the network in two; keep at least one channel")
        chans = sorted(chans)
        for ref in dfc.feed_in + dfc.dependent + dfc.feed_out:
            if ref.role in (HEAD_IN, HEAD_OUT):                 # whole attention heads
                cut[ref.module].setdefault("heads", set()).update(ref.indices(chans))
                continue
            if ref.role not in (FEED_IN, DEPENDENT, GROUPED_IN, PARAM):
                continue
            if ref.role == PARAM:
                cut[ref.module]["axis"] = ref.axis
            cut[ref.module]["in" if ref.role == GROUPED_IN else "out"].update(ref.indices(chans))
        for ref in dfc.feed_out:
            if ref.role == FEED_OUT:
                cut[ref.module]["in"].update(ref.indices(chans))
    return dict(cut)


def shrink_module(m: nn.Module, out_drop: set[int], in_drop: set[int], heads: set[int] | None = None) -> None:
    """Delete output indices ``out_drop`` and input indices ``in_drop`` of one layer, in place (and
    whole ``heads`` of an attention)."""
    h = handler_for(m)
    if h is None:
        raise PruningError(f"no surgery for {type(m).__name__}")
    if heads:
        h.shrink(m, out_drop, in_drop, heads=heads)
    else:
        h.shrink(m, out_drop, in_drop)


def check_graph(model: nn.Module, graph: ChannelGraph, names=None) -> None:
    """Raise a PruningError when ``graph`` was not discovered on ``model`` as it is now (e.g. a
    graph kept from before an earlier prune): its layers must have the widths seen while tracing."""
    for name in (graph.shapes if names is None else names):
        if name in graph.params:
            _check_param(model, graph, name)
            continue
        shapes = graph.shapes.get(name)
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise PruningError(f"the model has no layer {name!r} from the graph: pass the graph of this "
                               "model (graph = discover(model, input_shape))") from None
        h = handler_for(m)
        have = h.sizes(m) if h is not None else None
        if shapes is None or have is None or shapes[0] is None or shapes[1] is None:
            continue
        if len(shapes[0]) < 2 or len(shapes[1]) < 2:
            continue
        want = (shapes[0][h.axis], shapes[1][h.axis])
        if have != want:
            raise PruningError(f"layer {name!r} has {have[0]} -> {have[1]} channels but the graph saw "
                               f"{want[0]} -> {want[1]}: the graph describes another (or the unpruned) model. "
                               "Discover again after each prune: graph = discover(model, input_shape)")


def _check_param(model: nn.Module, graph: ChannelGraph, name: str) -> None:
    owner, _, attr = name.rpartition(".")
    try:
        t = getattr(model.get_submodule(owner), attr)
    except AttributeError:
        raise PruningError(f"the model has no tensor {name!r} from the graph: pass the graph of this model "
                           "(graph = discover(model, input_shape))") from None
    if tuple(t.shape) != tuple(graph.params[name]):
        raise PruningError(f"tensor {name!r} has shape {tuple(t.shape)} but the graph saw {graph.params[name]}: "
                           "the graph describes another (or the unpruned) model. Discover again after each "
                           "prune: graph = discover(model, input_shape)")


def prune(model: nn.Module, graph: ChannelGraph, removals: Mapping, inplace: bool = False) -> nn.Module:
    """A model with the given DFC channels physically removed.

    ``removals`` maps a DFC (or its index in ``graph``) to the channel indices to delete. The
    caller's model is left untouched unless ``inplace=True``. ``graph`` must describe ``model``
    as it is now (discover again after each prune).
    """
    cut = plan(graph, removals)
    check_graph(model, graph, cut)
    inexact = [d for d in {id(d): d for d in map(functools.partial(_as_dfc, graph), removals)}.values() if d.inexact]
    if inexact:
        warnings.warn(f"pruning DFC(s) {[d.index for d in inexact]} is not exact: {'; '.join(inexact[0].inexact)}. "
                      "Measure what it changes with pruning_lib.surgery.output_change(model, pruned, x)",
                      UserWarning, stacklevel=2)
    if inplace:
        target = model
    else:
        # Tensors that shrinking replaces anyway are not copied first (the copy borrows them until
        # their smaller versions are made from them; they are only read). For VGG's 100M-weight fc
        # layer that halves the time and memory of a prune.
        memo = {id(t): t for name in cut if "axis" not in cut[name] for t in _replaced(model.get_submodule(name))}
        target = copy.deepcopy(model, memo)
    for name, c in cut.items():
        if "axis" in c:                                 # a layer scale, a token: sliced along its axis
            owner, _, attr = name.rpartition(".")
            slice_tensor(target.get_submodule(owner), attr, c["axis"], c["out"])
        else:
            shrink_module(target.get_submodule(name), c["out"], c["in"], c.get("heads"))
    if not inplace and memo:
        borrowed = [t for _, t in target.named_parameters(remove_duplicate=False)] + list(target.buffers())
        if any(id(t) in memo for t in borrowed):          # a tensor shared with a layer left whole (tied
            return prune(copy.deepcopy(model), graph, removals, inplace=True)   # weights): copy it all
    return target


@dataclass(frozen=True)
class OutputChange:
    """How far a pruned model's output moved on one input: the largest absolute difference, that
    over the largest absolute original output, and whether the two are identical."""
    max_abs: float
    relative: float

    @property
    def exact(self) -> bool:
        return self.max_abs == 0.0


@torch.no_grad()
def output_change(model: nn.Module, pruned: nn.Module, x: torch.Tensor) -> OutputChange:
    """The change of the output from ``model`` to ``pruned`` on the example input ``x``, both in
    eval mode (their modes are restored): what an inexact prune (a LayerNorm's channels) costs."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be an example input tensor, got {type(x).__name__}")
    modes = [(m, m.training) for net in (model, pruned) for m in net.modules()]
    try:
        model.eval(), pruned.eval()
        p = next(model.parameters(), None)
        x = x.to(p.device, p.dtype) if p is not None and p.is_floating_point() else x
        a, b = model(x), pruned(x)
    finally:
        for m, mode in modes:
            m.training = mode
    diff = float((a - b).abs().max())
    scale = float(a.abs().max())
    return OutputChange(diff, diff / scale if scale > 0 else float("inf") if diff > 0 else 0.0)


def _replaced(m: nn.Module) -> list[torch.Tensor]:
    """Tensors the copy may borrow from the caller: only a built-in handler is known to replace them
    (a registered one may shrink in place, ``m.weight.data = ...``, which would reach the caller's)."""
    h = handler_for(m)
    return h.replaced_tensors(m) if h is not None and is_builtin(h) else []


def predicted_parameters(model: nn.Module, graph: ChannelGraph, removals: Mapping) -> int:
    """Parameter count the pruned model will have, computed from the removal plan alone."""
    cut = plan(graph, removals)
    check_graph(model, graph, cut)
    total = 0
    owned = [n + "." for n in cut if "axis" not in cut[n]
             and getattr(handler_for(model.get_submodule(n)), "owns_children", False)]
    for name, m in model.named_modules():
        if any(name.startswith(o) for o in owned):
            continue                                         # counted with the attention that owns it
        own = sum(p.numel() for p in m.parameters(recurse=False))
        for pname, p in m.named_parameters(prefix=name, recurse=False):
            if pname in cut:                                   # a layer scale, a token
                own -= p.numel() // p.shape[cut[pname]["axis"]] * len(cut[pname]["out"])
        if name not in cut:
            total += own
            continue
        if "heads" in cut[name]:
            total += handler_for(m).parameters_after(m, len(cut[name]["out"]), len(cut[name]["in"]),
                                                     n_heads=len(cut[name]["heads"]))
        else:
            total += handler_for(m).parameters_after(m, len(cut[name]["out"]), len(cut[name]["in"]))
    return total


def channel_counts(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, int]:
    """Output channels (features) of each conv and linear layer, e.g. to compare before and after."""
    out = {}
    for name, m in model.named_modules():
        if names is not None and name not in names:
            continue
        if is_weighted(m):
            out[name] = handler_for(m).out_channels(m)
    return out


def resize_to_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Shrink ``model``'s layers in place to the shapes in ``state``, a pruned model's ``state_dict``, so
    that ``model.load_state_dict(state)`` restores it: how a pruned model is reloaded from the unpruned
    architecture. Each layer type's handler rebuilds its own tensors; other modules are left alone.

    ``state`` is checked first (same keys as the model's state_dict, same tensor ranks): a state of
    another architecture is a PruningError naming the keys, and the model is left untouched (a warning
    would not do: PyTorch's ``load_state_dict`` copies every matching tensor before it refuses the
    others, so the trained weights would be lost in the next line). Only layers whose shapes differ are
    rebuilt, their new tensors on the model's device, in its dtype, with its requires_grad
    (load_state_dict then fills them)."""
    problem = check_state(model, state)
    if problem:
        raise PruningError(f"resize_to_state: {problem} (the model is left as it was)")
    for name, m in model.named_modules():
        h = handler_for(m)
        if h is not None:
            h.resize(m, state, f"{name}." if name else "")


def check_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Why ``state`` is not a (pruned) state_dict of ``model``'s architecture (other keys, tensors of
    another rank), or "" when it is one."""
    return _other_keys(model, state) or _other_ranks(model, state)


def _other_keys(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    if not isinstance(state, Mapping):
        raise PruningError(f"state must be a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        return (
            f"state does not belong to this architecture ({type(model).__name__}): "
            + (f"missing keys {missing[:4]}{' ...' if len(missing) > 4 else ''}; " if missing else "")
            + (f"unexpected keys {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}; " if unexpected else "")
            + "build the model the state was saved from (the same architecture, unpruned), then resize it")
    return ""


def _other_ranks(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    own = model.state_dict()
    ranks = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.dim() != own[k].dim()]
    if ranks:
        return (f"state's tensors {ranks[:4]} have another rank than the model's (e.g. {ranks[0]}: "
                f"{tuple(state[ranks[0]].shape)} vs {tuple(own[ranks[0]].shape)}): it comes from "
                "another architecture; build the model the state was saved from")
    return ""


__all__ = ["PruningError", "OutputChange", "output_change", "check_graph", "check_state", "plan", "prune", "shrink_module", "predicted_parameters", "channel_counts",
           "resize_to_state"]

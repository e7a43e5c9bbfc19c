"""Physical channel surgery: remove DFC channels so that layers become really smaller.

Pruning channel k of a DFC (A, D, B) deletes output filter k of every feed-in layer in A, entry k of
every dependent layer in D (BatchNorm; a depthwise conv shrinks its channels and ``groups``), and
input slice k of every feed-out layer in B (DFPC, Narshana et al. 2023, section 3). In a DFC of
``ChannelGraph.grouped`` channel k is a whole group: a grouped conv loses that group's input and
output channels and one of its ``groups``.
"""
from __future__ import annotations

import copy
import operator
from collections import defaultdict
from typing import Mapping, Sequence

import torch
from torch import nn

from .coupling import DEPENDENT, FEED_IN, FEED_OUT, GROUPED_IN, DFC, ChannelGraph


class PruningError(ValueError):
    """A pruning request that cannot be carried out (the message says why and what to do)."""


def _index(x, what: str) -> int:
    """``x`` as a plain int: ints, NumPy integers and one-element integer tensors; not bools,
    floats or strings (``int()`` would silently turn 1.7 into 1 and '3' into 3)."""
    if not isinstance(x, bool) and "bool" not in str(getattr(x, "dtype", "")):
        try:
            return operator.index(x)
        except TypeError:
            pass
    raise PruningError(f"{what} must be a plain integer index, got {x!r} ({type(x).__name__})")


def _as_dfc(graph: ChannelGraph, key) -> DFC:
    every = graph.dfcs + graph.unprunable + graph.grouped
    if isinstance(key, DFC):
        if not any(key is d for d in every):
            raise PruningError(f"DFC #{key.index} (A={key.A}) is not a DFC of this graph: it comes from "
                               "another (or an older) discovery. Use the DFCs of the graph you pass "
                               "(graph.dfcs), rediscovering after each prune")
        return key
    i = _index(key, "a DFC key")
    if not 0 <= i < len(every):
        raise PruningError(f"no DFC {key!r} in this graph (it has DFCs 0..{len(every) - 1})")
    return every[i]


def _channels(dfc: DFC, channels) -> set[int]:
    """The requested channel indices of ``dfc``, checked to be integers in range."""
    try:
        chans = {_index(c, f"a channel of DFC #{dfc.index}") for c in channels}
    except TypeError:
        raise PruningError(f"the channels of DFC #{dfc.index} must be a collection of indices, "
                           f"got {channels!r}") from None
    bad = sorted(c for c in chans if not 0 <= c < dfc.channels)
    if bad:
        raise PruningError(f"DFC #{dfc.index} has channels 0..{dfc.channels - 1}; got {bad[0]}..{bad[-1]}")
    return chans


def plan(graph: ChannelGraph, removals: Mapping) -> dict[str, dict[str, set[int]]]:
    """Per module, the output ('out') and input ('in') indices to delete; checks the request
    (a DFC given twice, by index and by object, counts once with the union of its channels)."""
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
        for ref in dfc.feed_in + dfc.dependent:
            cut[ref.module]["in" if ref.role == GROUPED_IN else "out"].update(ref.indices(chans))
        for ref in dfc.feed_out:
            cut[ref.module]["in"].update(ref.indices(chans))
    return dict(cut)


def _keep(n: int, drop: set[int], device) -> torch.Tensor:
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long, device=device)


def _param(t: torch.Tensor, requires_grad: bool) -> nn.Parameter:
    # t always comes from index_select, i.e. new memory: no copy needed to detach it from the source
    return nn.Parameter(t.contiguous(), requires_grad=requires_grad)


def shrink_module(m: nn.Module, out_drop: set[int], in_drop: set[int]) -> None:
    """Delete output indices ``out_drop`` and input indices ``in_drop`` of one layer, in place."""
    if isinstance(m, nn.Conv2d):
        dev = m.weight.device
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        keep_out = _keep(m.out_channels, out_drop, dev)
        w = m.weight.data.index_select(0, keep_out)
        if depthwise:
            m.groups = m.in_channels = len(keep_out)
        elif m.groups != 1:                       # whole groups: the weight's input slices stay
            m.groups -= _whole_groups(m, out_drop, in_drop)
            m.in_channels -= len(in_drop)
        else:
            keep_in = _keep(m.in_channels, in_drop, dev)
            w = w.index_select(1, keep_in)
            m.in_channels = len(keep_in)
        m.out_channels = len(keep_out)
        m.weight = _param(w, m.weight.requires_grad)
        if m.bias is not None:
            m.bias = _param(m.bias.data.index_select(0, keep_out), m.bias.requires_grad)
    elif isinstance(m, nn.Linear):
        dev = m.weight.device
        keep_out = _keep(m.out_features, out_drop, dev)
        keep_in = _keep(m.in_features, in_drop, dev)
        m.weight = _param(m.weight.data.index_select(0, keep_out).index_select(1, keep_in), m.weight.requires_grad)
        if m.bias is not None:
            m.bias = _param(m.bias.data.index_select(0, keep_out), m.bias.requires_grad)
        m.out_features, m.in_features = len(keep_out), len(keep_in)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        state = [t for t in (m.running_mean, m.weight) if t is not None]
        keep = _keep(m.num_features, out_drop, state[0].device if state else "cpu")
        if m.affine:
            m.weight = _param(m.weight.data.index_select(0, keep), m.weight.requires_grad)
            m.bias = _param(m.bias.data.index_select(0, keep), m.bias.requires_grad)
        if m.running_mean is not None:
            m.running_mean = m.running_mean.index_select(0, keep)
            m.running_var = m.running_var.index_select(0, keep)
        m.num_features = len(keep)
    else:
        raise PruningError(f"no surgery for {type(m).__name__}")


def _whole_groups(m: nn.Conv2d, out_drop: set[int], in_drop: set[int]) -> int:
    """How many groups of a grouped conv the drops remove; an error unless they are whole groups,
    the same ones on the input and the output side."""
    i, o = m.in_channels // m.groups, m.out_channels // m.groups
    gone = {c // o for c in out_drop}
    if ({c // i for c in in_drop} != gone or len(out_drop) != o * len(gone) or len(in_drop) != i * len(gone)):
        raise PruningError(f"grouped convolution (groups={m.groups}) can only lose whole groups, the same "
                           "on its input and output side: prune it through its DFC in graph.grouped")
    return len(gone)


def _sizes(m: nn.Module) -> tuple[int, int] | None:
    if isinstance(m, nn.Conv2d):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.num_features, m.num_features
    return None


def check_graph(model: nn.Module, graph: ChannelGraph, names=None) -> None:
    """Raise a PruningError when ``graph`` was not discovered on ``model`` as it is now (e.g. a
    graph kept from before an earlier prune): its layers must have the widths seen while tracing."""
    for name in (graph.shapes if names is None else names):
        shapes = graph.shapes.get(name)
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise PruningError(f"the model has no layer {name!r} from the graph: pass the graph of this "
                               "model (graph = discover(model, input_shape))") from None
        have = _sizes(m)
        if shapes is None or have is None or shapes[0] is None or shapes[1] is None:
            continue
        want = (shapes[0][1], shapes[1][1])
        if have != want:
            raise PruningError(f"layer {name!r} has {have[0]} -> {have[1]} channels but the graph saw "
                               f"{want[0]} -> {want[1]}: the graph describes another (or the unpruned) model. "
                               "Discover again after each prune: graph = discover(model, input_shape)")


def prune(model: nn.Module, graph: ChannelGraph, removals: Mapping, inplace: bool = False) -> nn.Module:
    """A model with the given DFC channels physically removed.

    ``removals`` maps a DFC (or its index in ``graph``) to the channel indices to delete. The
    caller's model is left untouched unless ``inplace=True``. ``graph`` must describe ``model``
    as it is now (discover again after each prune).
    """
    cut = plan(graph, removals)
    check_graph(model, graph, cut)
    if inplace:
        target = model
    else:
        # Tensors that shrinking replaces anyway are not copied first (the copy borrows them until
        # their smaller versions are made from them; they are only read). For VGG's 100M-weight fc
        # layer that halves the time and memory of a prune.
        memo = {id(t): t for name in cut for t in _replaced_tensors(model.get_submodule(name))}
        target = copy.deepcopy(model, memo)
    for name, c in cut.items():
        shrink_module(target.get_submodule(name), c["out"], c["in"])
    if not inplace and memo:
        borrowed = [t for _, t in target.named_parameters(remove_duplicate=False)] + list(target.buffers())
        if any(id(t) in memo for t in borrowed):          # a tensor shared with a layer left whole (tied
            return prune(copy.deepcopy(model), graph, removals, inplace=True)   # weights): copy it all
    return target


def _replaced_tensors(m: nn.Module) -> list[torch.Tensor]:
    """The tensors of ``m`` that :func:`shrink_module` swaps for new, smaller ones."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        names = ("weight", "bias")
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        names = ("weight", "bias", "running_mean", "running_var")
    else:
        return []
    return [t for t in (getattr(m, n, None) for n in names) if isinstance(t, torch.Tensor)]


def predicted_parameters(model: nn.Module, graph: ChannelGraph, removals: Mapping) -> int:
    """Parameter count the pruned model will have, computed from the removal plan alone."""
    cut = plan(graph, removals)
    check_graph(model, graph, cut)
    total = 0
    for name, m in model.named_modules():
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if name not in cut:
            total += own
            continue
        o, i = len(cut[name]["out"]), len(cut[name]["in"])
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            out_c = m.out_channels - o
            in_per_group = m.in_channels // m.groups if m.groups > 1 else m.in_channels - i
            total += out_c * in_per_group * k + (out_c if m.bias is not None else 0)
        elif isinstance(m, nn.Linear):
            total += (m.out_features - o) * (m.in_features - i) + (m.out_features - o if m.bias is not None else 0)
        else:  # BatchNorm
            total += own - (2 * o if m.affine else 0)
    return total


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def channel_counts(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, int]:
    """Output channels (features) of each conv and linear layer, e.g. to compare before and after."""
    out = {}
    for name, m in model.named_modules():
        if names is not None and name not in names:
            continue
        if isinstance(m, nn.Conv2d):
            out[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            out[name] = m.out_features
    return out


__all__ = ["PruningError", "check_graph", "plan", "prune", "shrink_module", "predicted_parameters", "num_parameters",
           "channel_counts", "FEED_IN", "FEED_OUT", "DEPENDENT"]

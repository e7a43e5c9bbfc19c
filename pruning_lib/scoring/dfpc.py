"""DFPC's data-free saliency of coupled channels (BGSC; Narshana et al., ICLR 2023).

For channel k of a DFC (A, D, B) the score sums, over every feed-out layer b and every feed-in
layer a upstream of b, a bound on how much b's output can change (in l1, inputs bounded in
l-infinity, 1-Lipschitz activations) when channel k is deleted:

    S_k = sum_{b in B} sum_{a in A, a -> b}  1^T |M_b|[:, k-block]  d_{a,k}  |M_a|[k-block, :] 1

with M_l layer l unrolled to a matrix, d_{a,k} = |gamma_k| / sqrt(var_k + eps) of the BN right after
a (1 without one), and the k-block the spatial positions of channel k. Every factor is
non-negative, so no matrix is unrolled: |M_a| 1 at channel k is V_a = conv(1, |W_a|)[k] and
1^T |M_b| at channel k is U_b = conv_transpose(1, |W_b|)[k]; S_k = sum_p U_b,k(p) d_{a,k} V_a,k(p).
A Linear b after global average pooling reads M_b = |W_b| times the averaging matrix (1/(H*W)); a
pooling module between a and b enters through its matrix (an average pool) or the 0/1 window
matrix that bounds a max pool (|max_win dx| <= sum_win |dx|), an extension for ImageNet ResNets.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.types import DFC, PARAM, ChannelGraph, ChannelRef
from ..layers import kind_of
from .base import ChannelScores, graph_of, register_criterion


class UnsupportedLayerError(ValueError):
    """A layer (or a spatial change between a and b) the DFPC bound does not cover here."""


def _abs_weight(m: nn.Module) -> torch.Tensor:
    return m.weight.detach().to("cpu", torch.float64).abs()


def _spatial(shape: tuple | None, name: str, which: str) -> tuple[int, ...]:
    if shape is None:
        raise UnsupportedLayerError(f"no {which} shape was recorded for {name}; discover the graph again "
                                    "on this model")
    return tuple(shape[2:])


@torch.no_grad()
def _conv_feed_in(m: nn.Conv2d, name: str, graph: ChannelGraph) -> torch.Tensor:
    shape_in, _ = graph.shapes[name]
    ones = torch.ones((1, m.in_channels) + _spatial(shape_in, name, "input"), dtype=torch.float64)
    v = m._conv_forward(ones, _abs_weight(m), None)          # honours padding_mode too
    return v[0].flatten(1)


@torch.no_grad()
def _conv_feed_out(m: nn.Conv2d, name: str, graph: ChannelGraph, stride: int) -> torch.Tensor:
    shape_in, shape_out = graph.shapes[name]
    size_in = _spatial(shape_in, name, "input")
    size_out = _spatial(shape_out, name, "output")
    w = _abs_weight(m)
    ones = torch.ones((1, m.out_channels) + size_out, dtype=torch.float64)
    if m.padding_mode == "zeros" and not isinstance(m.padding, str):
        pad = [size_in[i] - ((size_out[i] - 1) * m.stride[i] - 2 * m.padding[i]
                             + m.dilation[i] * (m.kernel_size[i] - 1) + 1) for i in range(2)]
        u = F.conv_transpose2d(ones, w, None, m.stride, m.padding, tuple(pad), 1, m.dilation)
    else:                       # other paddings: the same adjoint, by a vector-Jacobian product
        with torch.enable_grad():
            x = torch.ones((1, m.in_channels) + size_in, dtype=torch.float64, requires_grad=True)
            (u,) = torch.autograd.grad(m._conv_forward(x, w, None), x, ones)
    return u[0].flatten(1)


# The layer kinds (pruning_lib.layers) the bound covers, and how each unrolls.
_FEED_IN = {"linear": lambda m, name, graph: _abs_weight(m).sum(1, keepdim=True), "conv": _conv_feed_in}
_FEED_OUT = {"linear": lambda m, name, graph, stride: _abs_weight(m).sum(0).view(-1, stride),
             "conv": _conv_feed_out}


@torch.no_grad()
def feed_in_profile(m: nn.Module, name: str, graph: ChannelGraph) -> torch.Tensor:
    """V_a: row sums of |M_a| per output channel and position, shape (C_out, P_out).

    A conv: conv(all-ones input, |W_a|) with the layer's own stride, padding and dilation (so
    zero-padding borders are exact). A Linear: the row sums of |W_a| (P_out = 1)."""
    fn = _FEED_IN.get(kind_of(m))
    if fn is None:
        raise UnsupportedLayerError(f"{name} ({type(m).__name__}) cannot be a feed-in layer of the DFPC bound")
    return fn(m, name, graph)


@torch.no_grad()
def feed_out_profile(m: nn.Module, name: str, graph: ChannelGraph, stride: int = 1) -> torch.Tensor:
    """U_b: column sums of |M_b| per input channel and position, shape (C_in, P_in).

    A conv: conv_transpose(all-ones output, |W_b|) with the layer's stride, padding, dilation and the
    output padding that restores its input size. A Linear: the column sums of |W_b|; when it reads a
    flattened map (``stride`` = H*W features per channel) they are laid out per position."""
    fn = _FEED_OUT.get(kind_of(m))
    if fn is None:
        raise UnsupportedLayerError(f"{name} ({type(m).__name__}) cannot be a feed-out layer of the DFPC bound")
    return fn(m, name, graph, stride)


def bn_factor(model: nn.Module, dfc: DFC, a: str, rows: list[int]) -> torch.Tensor:
    """d_{a,k} = |gamma_k| / sqrt(running_var_k + eps) of the BN right after ``a`` (ones without one)."""
    bn_name = dfc.bn_after.get(a)
    if bn_name is None:
        return torch.ones(len(rows), dtype=torch.float64)
    bn = model.get_submodule(bn_name)
    if bn.running_var is None:
        raise UnsupportedLayerError(f"{bn_name} keeps no running statistics (track_running_stats=False); "
                                    "the DFPC bound needs running_var")
    var = bn.running_var.detach().to("cpu", torch.float64)[rows]
    gamma = bn.weight.detach().to("cpu", torch.float64)[rows].abs() if bn.affine else torch.ones_like(var)
    return gamma / torch.sqrt(var + bn.eps)


def _pool_between(model: nn.Module, graph: ChannelGraph, size_a: tuple, size_b: tuple) -> tuple[str, nn.Module]:
    """The one pooling module whose recorded input/output sizes turn a's output size into b's
    input size (e.g. the stem max-pool of an ImageNet ResNet); an error when none or several."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))
             and n in graph.shapes and graph.shapes[n][0] is not None and graph.shapes[n][1] is not None
             and tuple(graph.shapes[n][0][2:]) == size_a and tuple(graph.shapes[n][1][2:]) == size_b]
    if len(found) != 1:
        raise UnsupportedLayerError(
            f"a spatial resampling from {size_a} to {size_b} between a feed-in and a feed-out layer is "
            f"not covered by the DFPC bound here ({len(found)} pooling modules match; only one "
            "MaxPool2d/AvgPool2d module or a global average pool is understood); score this model "
            "with another criterion (pruning_lib.l1_scores)")
    return found[0]


def _pull_back(u: torch.Tensor, pool: nn.Module, size_a: tuple, size_b: tuple) -> torch.Tensor:
    """U through a pooling layer: M_pool^T U with M_pool the average pool's matrix, or for a max pool
    its linear majorant |max_win dx| <= sum_win |dx| (the window's 0/1 matrix)."""
    k, st, pad = pool.kernel_size, pool.stride, pool.padding
    if isinstance(pool, nn.MaxPool2d):
        if pool.dilation not in (1, (1, 1)):
            raise UnsupportedLayerError("a dilated max-pool is not covered by the DFPC bound here")

        def fn(x):                                          # the window sum
            return F.avg_pool2d(x, k, st, pad, pool.ceil_mode, True, divisor_override=1)
    else:
        def fn(x):
            return pool(x)
    with torch.enable_grad():
        x = torch.zeros((1, u.shape[0]) + size_a, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fn(x), x, u.reshape((1, u.shape[0]) + size_b))
    return g[0].flatten(1)


def _pair_score(u_rows: torch.Tensor, v_rows: torch.Tensor, a: str, b: str, model: nn.Module,
                graph: ChannelGraph, b_is_linear: bool) -> torch.Tensor:
    """sum_p U(p) V(p) per channel, matching b's input positions to a's output positions."""
    pu, pv = u_rows.shape[1], v_rows.shape[1]
    if pu == pv:
        return (u_rows * v_rows).sum(1)
    if pu == 1 and graph.global_pool.get(b) in ("sum", "amax"):
        # a global sum reads every position with weight 1; a global max is bounded by that sum
        # (|max_p dx_p| <= sum_p |dx_p|, the bound used for max pools below)
        return u_rows[:, 0] * v_rows.sum(1)
    if pu == 1:                    # b reads channel k after a global spatial pooling: averaging matrix
        return u_rows[:, 0] * v_rows.sum(1) / pv
    size_a = tuple(graph.shapes[a][1][2:])
    size_b = None if b_is_linear else tuple(graph.shapes[b][0][2:])
    if size_b is None:
        raise UnsupportedLayerError(
            f"{b} reads {pu} positions per channel but {a} writes {pv}: a resampling before a flatten "
            "is not covered by the DFPC bound here; score this model with another criterion "
            "(pruning_lib.l1_scores)")
    _, pool = _pool_between(model, graph, size_a, size_b)
    return (_pull_back(u_rows, pool, size_a, size_b) * v_rows).sum(1)


NORMALISATIONS = ("sum", "mean")


def beyond_the_bound(dfc: DFC) -> str:
    """Why DFPC's bound does not cover ``dfc`` ('' when it does). It is derived for DFCs of convs
    and Linear layers on (N, C) features with BatchNorms between them (Narshana et al., section 3);
    layers meeting the channels on another axis (a Linear over tokens or a channels-last map,
    whose activation, e.g. GELU, is not 1-Lipschitz), model tensors broadcast over them (a layer
    scale) and LayerNorms are outside it."""
    refs = dfc.feed_in + dfc.dependent + dfc.feed_out
    params = [r.module for r in refs if r.role == PARAM]
    if params:
        return f"the model tensor {params[0]} is broadcast over its channels (a layer scale or a token)"
    tokens = [r.module for r in refs if r.axis != 1]
    if tokens:
        return (f"{tokens[0]} meets its channels on axis {next(r.axis for r in refs if r.axis != 1)} "
                "(tokens or a channels-last map), not as the (N, C, ...) channels of a conv-BN-conv DFC")
    if dfc.inexact:
        return "a LayerNorm normalises its channels"
    return ""


@register_criterion("dfpc")
@torch.no_grad()
def dfpc_scores(model: nn.Module, graph: ChannelGraph | None = None, input_shape: tuple | None = None,
                normalise: str = "sum", data=None) -> ChannelScores:
    """The DFPC (BGSC) score of every channel of every prunable DFC of ``model``.

    ``graph``: the model's :func:`pruning_lib.graph.discover` result (found at ``input_shape``
    when not given; its recorded shapes fix the spatial sizes). Upstream pairs (a reaches b) come
    from ``DFC.upstream``. Scores are float64 on the CPU; the model is not modified.

    ``normalise``: ``"sum"`` is the paper's S_k, a sum over every (feed-in a, reader b) pair, so a
    coupled stream channel, which has many pairs, scores far above a channel inside a block;
    ``"mean"`` divides S_k by the DFC's number of pairs (what the released code's comment calls
    "mean normalised", while its code compares the raw sums), an ablation of that imbalance.
    ``data`` is ignored: the bound is data-free (it is there for the criterion protocol).
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise={normalise!r}: choose one of {NORMALISATIONS}")
    graph = graph_of(model, graph, input_shape)
    outside = [(d, beyond_the_bound(d)) for d in graph.dfcs]
    outside = [(d, why) for d, why in outside if why]
    if outside:
        d, why = outside[0]
        raise UnsupportedLayerError(
            f"DFPC's score is defined for conv-BN-conv DFCs (Narshana et al., ICLR 2023, section 3); "
            f"{len(outside)} DFC(s) of this graph are outside it, e.g. DFC #{d.index} (A={d.A}): {why}. "
            "Score this model with pruning_lib.l1_scores or random_scores")
    v_cache: dict[str, torch.Tensor] = {}
    u_cache: dict[tuple[str, int], torch.Tensor] = {}
    out: dict[DFC, torch.Tensor] = {}
    for dfc in graph.dfcs:
        ks = range(dfc.channels)
        feed_in: dict[str, ChannelRef] = {r.module: r for r in dfc.feed_in}
        s = torch.zeros(dfc.channels, dtype=torch.float64)
        pairs = 0
        for rb in dfc.feed_out:
            pairs += len(dfc.upstream.get(rb.module, []))
            key = (rb.module, rb.stride)
            if key not in u_cache:
                u_cache[key] = feed_out_profile(model.get_submodule(rb.module), rb.module, graph, rb.stride)
            u = u_cache[key][[rb.offset + k for k in ks]]
            for a in dfc.upstream.get(rb.module, []):
                if a not in v_cache:
                    v_cache[a] = feed_in_profile(model.get_submodule(a), a, graph)
                rows = feed_in[a].indices(ks)
                s += bn_factor(model, dfc, a, rows) * _pair_score(u, v_cache[a][rows], a, rb.module, model, graph,
                                                                  kind_of(model.get_submodule(rb.module)) == "linear")
        out[dfc] = s / pairs if normalise == "mean" and pairs else s
    return ChannelScores("dfpc" if normalise == "sum" else "dfpc_mean", graph, out)


@register_criterion("dfpc_mean")
def dfpc_mean_scores(model: nn.Module, graph: ChannelGraph | None = None,
                     input_shape: tuple | None = None, data=None) -> ChannelScores:
    """:func:`dfpc_scores` with ``normalise="mean"``: S_k divided by the DFC's (a, b) pair count."""
    return dfpc_scores(model, graph, input_shape, normalise="mean")


def closed_form_score(model: nn.Module, dfc: DFC, graph: ChannelGraph) -> torch.Tensor:
    """The note's interior approximation, ignoring zero-padding borders: per channel,
    sum_{b, a -> b} d_{a,k} ||W_a[k]||_1 ||W_b[:, k]||_1 P(b), with P(b) the positions b reads per
    channel. Equal to :func:`dfpc_scores` for 1x1 convs and Linear layers; an upper bound otherwise."""
    s = torch.zeros(dfc.channels, dtype=torch.float64)
    feed_in = {r.module: r for r in dfc.feed_in}
    for rb in dfc.feed_out:
        mb = model.get_submodule(rb.module)
        wb = _abs_weight(mb)
        if kind_of(mb) == "linear":
            col = wb.sum(0).view(-1, rb.stride).sum(1)
            positions = 1
        else:
            col = wb.sum((0, 2, 3))
            positions = math.prod(_spatial(graph.shapes[rb.module][1], rb.module, "output"))
        col = col[[rb.offset + k for k in range(dfc.channels)]]
        for a in dfc.upstream.get(rb.module, []):
            rows = feed_in[a].indices(range(dfc.channels))
            row = _abs_weight(model.get_submodule(a)).flatten(1).sum(1)[rows]
            s += bn_factor(model, dfc, a, rows) * row * col * positions
    return s


__all__ = ["dfpc_scores", "dfpc_mean_scores", "beyond_the_bound", "NORMALISATIONS", "feed_in_profile", "feed_out_profile", "bn_factor", "closed_form_score",
           "UnsupportedLayerError"]

"""Handlers of torch.nn's channel layers: dense, grouped and depthwise ``Conv2d``, ``Linear``,
``BatchNorm`` and ``LayerNorm`` (DFPC section 3's feed-in, feed-out and dependent layers)."""
from __future__ import annotations

import torch
from torch import nn

from .base import CHANNELWISE, GROUPED, NORMALISING, PRODUCER, LayerHandler, PruningError, _fresh, _keep, _param

__all__ = ["ConvHandler", "GroupedConvHandler", "DepthwiseConvHandler", "LinearHandler", "BatchNormHandler",
           "LayerNormHandler", "conv_handler", "LINEAR"]

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
    """A ``Linear`` layer: output feature k and input feature k can go independently. It acts on the
    last axis, so it reads (N, C) features, tokens (N, L, C) and channels-last maps (N, H, W, C)."""
    kind, role, axis = "linear", PRODUCER, -1

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


class LayerNormHandler(LayerHandler):
    """A ``LayerNorm`` over the channels (the last axis, ``normalized_shape`` of one entry): it
    normalises them together, so removing channel k changes the mean and variance the others are
    divided by. Discovery refuses its channels unless asked for an inexact prune; then entry k of
    its affine parameters goes with the channel."""
    kind, role, axis = "layernorm", NORMALISING, -1

    def sizes(self, m):
        n = m.normalized_shape[-1]
        return n, n

    def shrink(self, m, out_drop, in_drop):
        if len(m.normalized_shape) != 1:
            raise PruningError(f"a LayerNorm over {tuple(m.normalized_shape)} (several axes) cannot lose channels")
        keep = _keep(m.normalized_shape[0], out_drop, m.weight.device if m.weight is not None else "cpu")
        if m.weight is not None:
            m.weight = _param(m.weight.data.index_select(0, keep), m.weight)
        if getattr(m, "bias", None) is not None:
            m.bias = _param(m.bias.data.index_select(0, keep), m.bias)
        m.normalized_shape = (len(keep),)

    def parameters_after(self, m, n_out, n_in):
        return sum(p.numel() for p in m.parameters(recurse=False)) - n_out * len(list(m.parameters(recurse=False)))

    def resize(self, m, state, prefix):
        w = state.get(prefix + "weight")
        if w is None or tuple(w.shape) == tuple(m.normalized_shape):
            return
        m.normalized_shape = tuple(w.shape)
        m.weight = _fresh(w.shape, m.weight)
        if getattr(m, "bias", None) is not None:
            m.bias = _fresh(w.shape, m.bias)


def conv_handler(m: nn.Conv2d) -> LayerHandler:
    """A depthwise conv pruned to one channel has groups = 1 and is then read as an ordinary 1 -> 1
    conv, a DFC of its own: the two cannot be told apart. Either way that channel stays, since a
    DFC's last channel is never removed."""
    if m.groups == 1:
        return _CONV
    if m.groups == m.in_channels == m.out_channels:
        return _DEPTHWISE
    return _GROUPED_CONV


_CONV, _GROUPED_CONV, _DEPTHWISE = ConvHandler(), GroupedConvHandler(), DepthwiseConvHandler()
LINEAR = LinearHandler()

"""The operation tables of the channel graph: which modules, functions and methods act channel by
channel, element-wise, across several tensors, or only along spatial dims."""
from __future__ import annotations

import builtins
import operator

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
                nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.MaxPool2d, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d)
CHANNELWISE_FUNCS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish,
                      F.hardsigmoid, F.hardtanh, F.softplus, F.dropout, F.dropout2d, F.max_pool2d,
                      F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate,
                      torch.relu, torch.relu_, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
                      torch.clone, torch.nn.functional.pad}
try:    # torchvision's stochastic depth scales whole samples (N, 1, 1, 1): channel-wise
    from torchvision.ops import stochastic_depth as _stochastic_depth
    CHANNELWISE_FUNCS.add(_stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is a dependency, but discovery does not need it
    pass
CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clone", "contiguous",
                        "detach", "float", "to", "clamp", "clamp_", "clamp_min", "clamp_min_"}
ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
                operator.isub, operator.imul, torch.add, torch.sub, torch.mul, torch.div}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
NON_TENSOR = {builtins.getattr, operator.getitem, builtins.len}
# Ops that act on each element alone: the channels may lie on any axis (tokens (N, L, C) and
# channels-last maps too). The other channel-wise ops (pools, padding, upsampling, Dropout2d) work
# along the spatial axes of an (N, C, H, W) map, so the channels must be on axis 1.
POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
             nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity,
             nn.Dropout, nn.AlphaDropout)
POINTWISE_FUNCS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
                   F.hardtanh, F.softplus, F.dropout, torch.relu, torch.relu_, torch.sigmoid, torch.tanh,
                   F.sigmoid, F.tanh, torch.clone}
try:
    POINTWISE_FUNCS.add(_stochastic_depth)          # scales whole samples: any channel axis
except NameError:  # pragma: no cover
    pass
# Ops that move the channel axis (permute, transpose) or reshape around it (view, reshape, flatten).
PERMUTES = {torch.permute, torch.transpose, torch.swapaxes, torch.swapdims}
PERMUTE_METHODS = {"permute", "transpose", "swapaxes", "swapdims"}
RESHAPES = {torch.reshape, torch.flatten}
# A model tensor read by get_attr keeps being "that tensor" through these (broadcast views, casts)
PARAM_VIEWS = {"expand", "expand_as", "to", "contiguous", "type_as", "detach"}
NORM_FUNCS = {F.layer_norm, F.group_norm, F.rms_norm} if hasattr(F, "rms_norm") else {F.layer_norm, F.group_norm}
# 2-D spatial ops: on a 3-D tensor (N, C, L) PyTorch reads dim 1 as a spatial axis (an unbatched
# (C, H, W) input), so they pool or pad across channels there.
SPATIAL_2D = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.ZeroPad2d)
SPATIAL_2D_FUNCS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
# Ops returning several tensors, function or method form: name -> (position of ``dim`` counting the
# input, its default). Along a spatial dim every result keeps the input's channels; along the batch
# or channel axis they split or mix channels (max over channels), which the graph refuses.
MULTI_OUTPUT = {"chunk": (2, 0), "split": (2, 0), "tensor_split": (2, 0), "unbind": (1, 0),
                 "max": (1, None), "min": (1, None), "sort": (1, -1), "topk": (2, -1),
                 "kthvalue": (2, -1), "median": (1, -1), "mode": (1, -1)}


__all__ = ["ACTIVATIONS", "CHANNELWISE_FUNCS", "POINTWISE", "POINTWISE_FUNCS", "PERMUTES", "PERMUTE_METHODS",
           "RESHAPES", "PARAM_VIEWS", "NORM_FUNCS", "CHANNELWISE_METHODS", "ELEMENTWISE", "ELEMENTWISE_METHODS",
           "NON_TENSOR", "SPATIAL_2D", "SPATIAL_2D_FUNCS", "MULTI_OUTPUT"]

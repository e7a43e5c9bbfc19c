"""Wrong answers to the code questions of notebook 00, one dropped requirement each (see ../test_mutants.py).

Names resolve in the notebook's namespace at call time (``nn``, ``torch``, the master's helpers).
"""
# ruff: noqa: F821
import torch  # for default arguments; the bodies use the notebook's names

FUNCTIONS = {"q00_1": "layer_params", "q00_2": "conv_output_size", "q00_3": "conv_flops", "q00_4": "stage_params"}
SETUP = ""


# q00_1 layer_params(layer): weights + bias of a Conv2d (C_in / groups) or Linear, from attributes; else TypeError

def q00_1__ignores_groups(layer):
    """drops groups: every output channel connected to all C_in inputs."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        fan_in, outputs = layer.in_channels * kh * kw, layer.out_channels
    elif isinstance(layer, nn.Linear):
        fan_in, outputs = layer.in_features, layer.out_features
    else:
        raise TypeError(type(layer).__name__)
    return outputs * fan_in + (outputs if layer.bias is not None else 0)


def q00_1__always_counts_a_bias(layer):
    """drops bias=False: counts one bias per output whether or not the layer has one."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        fan_in, outputs = (layer.in_channels // layer.groups) * kh * kw, layer.out_channels
    elif isinstance(layer, nn.Linear):
        fan_in, outputs = layer.in_features, layer.out_features
    else:
        raise TypeError(type(layer).__name__)
    return outputs * fan_in + outputs


def q00_1__square_kernel(layer):
    """drops the kernel's second dimension: assumes a k x k kernel."""
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size[0]
        fan_in, outputs = (layer.in_channels // layer.groups) * k * k, layer.out_channels
    elif isinstance(layer, nn.Linear):
        fan_in, outputs = layer.in_features, layer.out_features
    else:
        raise TypeError(type(layer).__name__)
    return outputs * fan_in + (outputs if layer.bias is not None else 0)


def q00_1__no_type_error(layer):
    """drops 'anything else is a TypeError': counts any layer's parameters."""
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        fan_in, outputs = (layer.in_channels // layer.groups) * kh * kw, layer.out_channels
    elif isinstance(layer, nn.Linear):
        fan_in, outputs = layer.in_features, layer.out_features
    else:
        return sum(p.numel() for p in layer.parameters())
    return outputs * fan_in + (outputs if layer.bias is not None else 0)


# q00_2 conv_output_size(conv, h, w): floor((h + 2p - d(k-1) - 1) / s) + 1 per dimension

def q00_2__ignores_dilation(conv, h, w):
    """drops the dilation d."""
    def one(size, axis):
        return (size + 2 * conv.padding[axis] - conv.kernel_size[axis]) // conv.stride[axis] + 1
    return one(h, 0), one(w, 1)


def q00_2__ignores_padding(conv, h, w):
    """drops the padding p."""
    def one(size, axis):
        return (size - conv.dilation[axis] * (conv.kernel_size[axis] - 1) - 1) // conv.stride[axis] + 1
    return one(h, 0), one(w, 1)


def q00_2__rounds_instead_of_floor(conv, h, w):
    """drops the floor: rounds the division to the nearest integer."""
    def one(size, axis):
        span = conv.dilation[axis] * (conv.kernel_size[axis] - 1) + 1
        return round((size + 2 * conv.padding[axis] - span) / conv.stride[axis]) + 1
    return one(h, 0), one(w, 1)


def q00_2__first_dimension_for_both(conv, h, w):
    """drops 'per dimension': uses the height's kernel, stride, padding and dilation for the width too."""
    def one(size):
        span = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
        return (size + 2 * conv.padding[0] - span) // conv.stride[0] + 1
    return one(h), one(w)


# q00_3 conv_flops(conv, out_h, out_w): 2 x C_out x out_h x out_w x C_in/g x kh x kw, bias not counted

def q00_3__macs_not_flops(conv, out_h, out_w):
    """drops '2 FLOPs per multiply-add': returns MACs."""
    kh, kw = conv.kernel_size
    return conv.out_channels * out_h * out_w * (conv.in_channels // conv.groups) * kh * kw


def q00_3__ignores_groups(conv, out_h, out_w):
    """drops C_in / g for a grouped conv."""
    kh, kw = conv.kernel_size
    return 2 * conv.out_channels * out_h * out_w * conv.in_channels * kh * kw


def q00_3__counts_the_bias(conv, out_h, out_w):
    """drops 'the bias is not counted': adds one FLOP per output when the conv has a bias."""
    kh, kw = conv.kernel_size
    flops = 2 * conv.out_channels * out_h * out_w * (conv.in_channels // conv.groups) * kh * kw
    return flops + (conv.out_channels * out_h * out_w if conv.bias is not None else 0)


def q00_3__square_output(conv, out_h, out_w):
    """drops out_w: assumes a square output map."""
    kh, kw = conv.kernel_size
    return 2 * conv.out_channels * out_h * out_h * (conv.in_channels // conv.groups) * kh * kw


# q00_4 stage_params(c_in, w, n): n blocks (conv1, bn1, conv2, bn2), a 1x1 projection + BN in the first block if c_in != w

def q00_4__no_batchnorm(c_in, w, n):
    """drops the BatchNorms' 2 parameters per channel."""
    total = 0
    for _ in range(n):
        total += c_in * w * 9 + w * w * 9
        if c_in != w:
            total += c_in * w
        c_in = w
    return total


def q00_4__projection_without_bn(c_in, w, n):
    """drops the projection shortcut's BatchNorm."""
    total = 0
    for _ in range(n):
        total += c_in * w * 9 + 2 * w + w * w * 9 + 2 * w
        if c_in != w:
            total += c_in * w
        c_in = w
    return total


def q00_4__every_block_entered_with_c_in(c_in, w, n):
    """drops 'c_in only for the first block': every block reads c_in channels and has a projection."""
    total = 0
    for _ in range(n):
        total += c_in * w * 9 + 2 * w + w * w * 9 + 2 * w
        if c_in != w:
            total += c_in * w + 2 * w
    return total


def q00_4__no_projection(c_in, w, n):
    """drops the projection shortcut where c_in != w."""
    total = 0
    for _ in range(n):
        total += c_in * w * 9 + 2 * w + w * w * 9 + 2 * w
        c_in = w
    return total

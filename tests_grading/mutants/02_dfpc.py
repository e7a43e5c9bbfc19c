"""Wrong answers to the code questions of notebook 02, one dropped requirement each (see ../test_mutants.py)."""
# ruff: noqa: F821
import torch  # for default arguments; the bodies use the notebook's names

FUNCTIONS = {"q02_1": "my_dfpc_score", "q02_2": "my_removal_order", "q02_3": "channel_flops"}
SETUP = ""


# q02_1 my_dfpc_score(conv_a, conv_b, bn, in_size): d_k * sum_p U_k(p) V_k(p), float64, shape (C,)

def _mutant_uv(conv_a, conv_b, in_size, *, stride=True, pad_b=None, dtype=torch.float64, absolute=True):
    wa, wb = conv_a.weight.detach().to(dtype), conv_b.weight.detach().to(dtype)
    if absolute:
        wa, wb = wa.abs(), wb.abs()
    ones_in = torch.ones((1, conv_a.in_channels) + tuple(in_size), dtype=dtype)
    v = F.conv2d(ones_in, wa, stride=conv_a.stride if stride else 1, padding=conv_a.padding)[0]
    ones_out = torch.ones((1, conv_b.out_channels) + tuple(v.shape[1:]), dtype=dtype)
    u = F.conv_transpose2d(ones_out, wb, padding=conv_b.padding if pad_b is None else pad_b)[0]
    return u, v


def q02_1__no_abs_gamma(conv_a, conv_b, bn, in_size):
    """drops |gamma_k|: uses gamma_k with its sign."""
    u, v = _mutant_uv(conv_a, conv_b, in_size)
    d = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return d * (u * v).sum((1, 2))


def q02_1__ignores_bn_eps(conv_a, conv_b, bn, in_size):
    """drops the BN's epsilon in sqrt(sigma^2 + eps)."""
    u, v = _mutant_uv(conv_a, conv_b, in_size)
    d = bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double())
    return d * (u * v).sum((1, 2))


def q02_1__ignores_stride(conv_a, conv_b, bn, in_size):
    """drops conv_a's stride in V_a (a stride-2 conv_a is treated as stride 1)."""
    u, v = _mutant_uv(conv_a, conv_b, in_size, stride=False)
    d = bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)
    return d * (u * v).sum((1, 2))


def q02_1__conv_a_padding_for_conv_b(conv_a, conv_b, bn, in_size):
    """drops conv_b's own padding: uses conv_a's padding in the transposed convolution."""
    u, v = _mutant_uv(conv_a, conv_b, in_size, pad_b=conv_a.padding)
    d = bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)
    return d * (u * v).sum((1, 2))


def q02_1__float32(conv_a, conv_b, bn, in_size):
    """drops float64: computes in float32."""
    u, v = _mutant_uv(conv_a, conv_b, in_size, dtype=torch.float32)
    d = bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)
    return d * (u * v).sum((1, 2))


def q02_1__no_abs_weights(conv_a, conv_b, bn, in_size):
    """drops |W|: convolves the all-ones tensors with the signed weights."""
    u, v = _mutant_uv(conv_a, conv_b, in_size, absolute=False)
    d = bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)
    return d * (u * v).sum((1, 2))


def q02_1__square_input(conv_a, conv_b, bn, in_size):
    """drops in_size's width: assumes a square H x H input."""
    u, v = _mutant_uv(conv_a, conv_b, (in_size[0], in_size[0]))
    d = bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)
    return d * (u * v).sum((1, 2))


# q02_2 my_removal_order(scores, dfcs): ascending; ties by dfc.index then k; each DFC's first argmax left out

def _mutant_order(scores, dfcs, key, best_of=lambda s: int(torch.argmax(s)), reverse=False):
    ranked = []
    for pos, dfc in enumerate(dfcs):
        s = scores[dfc]
        best = best_of(s)
        ranked.extend((float(s[k]), dfc.index, k, pos, dfc) for k in range(dfc.channels) if k != best)
    ranked.sort(key=key, reverse=reverse)
    return [(e[4], e[2]) for e in ranked]


def q02_2__ties_by_list_position(scores, dfcs):
    """drops 'ties broken by the DFC's index': breaks them by the DFC's position in `dfcs`."""
    return _mutant_order(scores, dfcs, key=lambda e: (e[0], e[3], e[2]))


def q02_2__ties_by_k_first(scores, dfcs):
    """drops the tie order 'index, then k': breaks ties by k first."""
    return _mutant_order(scores, dfcs, key=lambda e: (e[0], e[2], e[1]))


def q02_2__last_argmax_left_out(scores, dfcs):
    """drops 'the first index of its largest score': leaves out the last one."""
    return _mutant_order(scores, dfcs, key=lambda e: e[:3], best_of=lambda s: len(s) - 1 - int(torch.argmax(s.flip(0))))


def q02_2__best_channel_kept(scores, dfcs):
    """drops 'each DFC's best channel is left out'."""
    return _mutant_order(scores, dfcs, key=lambda e: e[:3], best_of=lambda s: -1)


def q02_2__descending(scores, dfcs):
    """drops 'ascending': largest scores first."""
    return _mutant_order(scores, dfcs, key=lambda e: (-e[0], e[1], e[2]))


# q02_3 channel_flops(conv_a, conv_b, out_a, out_b): 2 x (C_in(a) k_a over out_a + C_out(b) k_b over out_b)

def _mutant_sizes(conv_a, conv_b):
    filter_a = (conv_a.in_channels // conv_a.groups) * conv_a.kernel_size[0] * conv_a.kernel_size[1]
    slice_b = (conv_b.out_channels // conv_b.groups) * conv_b.kernel_size[0] * conv_b.kernel_size[1]
    return filter_a, slice_b


def q02_3__conv_b_over_out_a(conv_a, conv_b, out_a, out_b):
    """drops conv_b's own output size: counts conv_b over out_a."""
    filter_a, slice_b = _mutant_sizes(conv_a, conv_b)
    return 2 * (filter_a + slice_b) * out_a[0] * out_a[1]


def q02_3__macs_not_flops(conv_a, conv_b, out_a, out_b):
    """drops '2 per multiply-add': returns MACs."""
    filter_a, slice_b = _mutant_sizes(conv_a, conv_b)
    return filter_a * out_a[0] * out_a[1] + slice_b * out_b[0] * out_b[1]


def q02_3__counts_bias(conv_a, conv_b, out_a, out_b):
    """drops 'bias not counted': adds conv_a's bias at every position of its output."""
    filter_a, slice_b = _mutant_sizes(conv_a, conv_b)
    bias = out_a[0] * out_a[1] if conv_a.bias is not None else 0
    return 2 * (filter_a * out_a[0] * out_a[1] + slice_b * out_b[0] * out_b[1]) + bias


def q02_3__slice_uses_in_channels(conv_a, conv_b, out_a, out_b):
    """drops 'one input slice of conv_b' (C_out(b) x kernel): uses conv_b's input channels instead."""
    filter_a = (conv_a.in_channels // conv_a.groups) * conv_a.kernel_size[0] * conv_a.kernel_size[1]
    slice_b = conv_b.in_channels * conv_b.kernel_size[0] * conv_b.kernel_size[1]
    return 2 * (filter_a * out_a[0] * out_a[1] + slice_b * out_b[0] * out_b[1])


def q02_3__ignores_conv_b(conv_a, conv_b, out_a, out_b):
    """drops the reader's share: counts only conv_a's filter."""
    filter_a, _ = _mutant_sizes(conv_a, conv_b)
    return 2 * filter_a * out_a[0] * out_a[1]

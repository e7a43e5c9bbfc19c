"""Wrong answers to the code questions of notebook 01, one dropped requirement each (see ../test_mutants.py)."""
# ruff: noqa: F821
import torch  # for default arguments; the bodies use the notebook's names

FUNCTIONS = {"q01_1": "predict_dfcs", "q01_2": "removed_parameters", "q01_3": "remove_channel"}
SETUP = """
resnet20, meta20 = load_checkpoint(CKPT / "resnet20.pt")
g20 = discover(resnet20, (1, 3, 32, 32))
"""


# q01_1 predict_dfcs(n, widths): one inner DFC per block, one coupled stream per stage, channels n*w + w per stage

def q01_1__ignores_widths(n, widths=(16, 32, 64)):
    """drops `widths`: hard-codes the course's stage widths 16, 32, 64."""
    return {"DFCs": 3 * n + 3, "coupled": 3, "channels": 112 * n + 112}


def q01_1__three_stages_always(n, widths=(16, 32, 64)):
    """drops 'one stage per entry of widths': assumes three stages (uses the first three widths)."""
    w = list(widths)[:3] + [0] * (3 - len(widths))
    return {"DFCs": 3 * n + 3, "coupled": 3, "channels": sum(x * n for x in w) + sum(w)}


def q01_1__no_stream_channels(n, widths=(16, 32, 64)):
    """drops the streams' own channels: counts only the channels inside the blocks."""
    return {"DFCs": n * len(widths) + len(widths), "coupled": len(widths), "channels": sum(w * n for w in widths)}


def q01_1__streams_not_dfcs(n, widths=(16, 32, 64)):
    """drops the streams from the DFC count (counts only the blocks' inner DFCs)."""
    return {"DFCs": n * len(widths), "coupled": len(widths), "channels": sum(w * n for w in widths) + sum(widths)}


# q01_2 removed_parameters(model, dfc, n): feed-in filters + bias, BN gamma/beta, reader slices x ref.stride

def q01_2__ignores_feed_in_bias(model, dfc, n):
    """drops the feed-in layers' bias entries."""
    per = 0
    for ref in dfc.feed_in:
        per += model.get_submodule(ref.module).weight[0].numel()
    for ref in dfc.dependent:
        per += 2
    for ref in dfc.feed_out:
        per += ref.stride * model.get_submodule(ref.module).weight[:, 0].numel()
    return n * per


def q01_2__ignores_stride(model, dfc, n):
    """drops `ref.stride`: one input feature per channel for a linear reader of a flattened map."""
    per = 0
    for ref in dfc.feed_in:
        m = model.get_submodule(ref.module)
        per += m.weight[0].numel() + (m.bias is not None)
    for ref in dfc.dependent:
        per += 2
    for ref in dfc.feed_out:
        per += model.get_submodule(ref.module).weight[:, 0].numel()
    return n * per


def q01_2__ignores_batchnorm(model, dfc, n):
    """drops gamma_k and beta_k of the dependent BatchNorms."""
    per = 0
    for ref in dfc.feed_in:
        m = model.get_submodule(ref.module)
        per += m.weight[0].numel() + (m.bias is not None)
    for ref in dfc.feed_out:
        per += ref.stride * model.get_submodule(ref.module).weight[:, 0].numel()
    return n * per


def q01_2__counts_running_stats(model, dfc, n):
    """drops 'gamma and beta' (parameters only): counts the BN's running mean and variance too."""
    per = 0
    for ref in dfc.feed_in:
        m = model.get_submodule(ref.module)
        per += m.weight[0].numel() + (m.bias is not None)
    for ref in dfc.dependent:
        per += 4
    for ref in dfc.feed_out:
        per += ref.stride * model.get_submodule(ref.module).weight[:, 0].numel()
    return n * per


# q01_3 remove_channel(conv_a, bn, conv_b, k): new modules; filter k (+ bias) of conv_a, 4 BN vectors (eps,
# momentum kept), input slice k of conv_b; the modules passed in unchanged; exact

def _mutant_keep(conv_a, k):
    return torch.tensor([c for c in range(conv_a.out_channels) if c != k])


def q01_3__in_place(conv_a, bn, conv_b, k):
    """drops 'the three modules passed in must stay unchanged': edits and returns them."""
    keep = _mutant_keep(conv_a, k)
    with torch.no_grad():
        conv_a.weight = nn.Parameter(conv_a.weight[keep].clone())
        if conv_a.bias is not None:
            conv_a.bias = nn.Parameter(conv_a.bias[keep].clone())
        conv_a.out_channels = len(keep)
        bn.weight, bn.bias = nn.Parameter(bn.weight[keep].clone()), nn.Parameter(bn.bias[keep].clone())
        bn.running_mean, bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
        bn.num_features = len(keep)
        conv_b.weight = nn.Parameter(conv_b.weight[:, keep].clone())
        conv_b.in_channels = len(keep)
    return conv_a, bn, conv_b


def q01_3__new_bn_default_eps(conv_a, bn, conv_b, k):
    """drops 'keep its eps and momentum': builds a fresh BatchNorm2d with the defaults."""
    keep = _mutant_keep(conv_a, k)
    new_a, new_b = copy.deepcopy(conv_a), copy.deepcopy(conv_b)
    new_bn = nn.BatchNorm2d(len(keep)).to(bn.weight.dtype).eval()
    with torch.no_grad():
        new_a.weight = nn.Parameter(conv_a.weight[keep].clone())
        if conv_a.bias is not None:
            new_a.bias = nn.Parameter(conv_a.bias[keep].clone())
        new_a.out_channels = len(keep)
        new_bn.weight.copy_(bn.weight[keep])
        new_bn.bias.copy_(bn.bias[keep])
        new_bn.running_mean.copy_(bn.running_mean[keep])
        new_bn.running_var.copy_(bn.running_var[keep])
        new_b.weight = nn.Parameter(conv_b.weight[:, keep].clone())
        new_b.in_channels = len(keep)
    return new_a, new_bn, new_b


def q01_3__keeps_running_stats(conv_a, bn, conv_b, k):
    """drops the running mean and variance: keeps the BN's statistics of all channels, shifted by one from k on."""
    keep = _mutant_keep(conv_a, k)
    new_a, new_bn, new_b = copy.deepcopy(conv_a), copy.deepcopy(bn), copy.deepcopy(conv_b)
    with torch.no_grad():
        new_a.weight = nn.Parameter(conv_a.weight[keep].clone())
        if conv_a.bias is not None:
            new_a.bias = nn.Parameter(conv_a.bias[keep].clone())
        new_a.out_channels = len(keep)
        new_bn.weight, new_bn.bias = nn.Parameter(bn.weight[keep].clone()), nn.Parameter(bn.bias[keep].clone())
        new_bn.running_mean, new_bn.running_var = bn.running_mean[:-1].clone(), bn.running_var[:-1].clone()
        new_bn.num_features = len(keep)
        new_b.weight = nn.Parameter(conv_b.weight[:, keep].clone())
        new_b.in_channels = len(keep)
    return new_a, new_bn, new_b


def q01_3__drops_conv_b_output(conv_a, bn, conv_b, k):
    """drops 'input slice [:, k] of conv_b': keeps conv_b's first C-1 input slices."""
    keep = _mutant_keep(conv_a, k)
    new_a, new_bn, new_b = copy.deepcopy(conv_a), copy.deepcopy(bn), copy.deepcopy(conv_b)
    with torch.no_grad():
        new_a.weight = nn.Parameter(conv_a.weight[keep].clone())
        if conv_a.bias is not None:
            new_a.bias = nn.Parameter(conv_a.bias[keep].clone())
        new_a.out_channels = len(keep)
        new_bn.weight, new_bn.bias = nn.Parameter(bn.weight[keep].clone()), nn.Parameter(bn.bias[keep].clone())
        new_bn.running_mean, new_bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
        new_bn.num_features = len(keep)
        new_b.weight = nn.Parameter(conv_b.weight[:, :-1].clone())
        new_b.in_channels = len(keep)
    return new_a, new_bn, new_b


def q01_3__ignores_conv_a_bias(conv_a, bn, conv_b, k):
    """drops conv_a's bias entry k: removes the bias altogether."""
    keep = _mutant_keep(conv_a, k)
    new_a, new_bn, new_b = copy.deepcopy(conv_a), copy.deepcopy(bn), copy.deepcopy(conv_b)
    with torch.no_grad():
        new_a.weight = nn.Parameter(conv_a.weight[keep].clone())
        new_a.bias = None
        new_a.out_channels = len(keep)
        new_bn.weight, new_bn.bias = nn.Parameter(bn.weight[keep].clone()), nn.Parameter(bn.bias[keep].clone())
        new_bn.running_mean, new_bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
        new_bn.num_features = len(keep)
        new_b.weight = nn.Parameter(conv_b.weight[:, keep].clone())
        new_b.in_channels = len(keep)
    return new_a, new_bn, new_b

"""Small hand-written CNNs that exercise the channel graph: concatenation, flatten into Linear,
a branch that rejoins, depthwise convs, and ops the graph must refuse; and the exactness check
of a prune (the pruned model must compute what the original computes with those channels silenced)."""
import copy

import torch
from torch import nn


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """A float64 eval copy with random BN statistics and affine terms (no channel trivially zero)."""
    g = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                for t, draw in ((m.running_mean, lambda: torch.randn(n, generator=g, dtype=torch.float64) * 0.1),
                                (m.running_var, lambda: torch.rand(n, generator=g, dtype=torch.float64) + 0.5),
                                (m.weight, lambda: torch.rand(n, generator=g, dtype=torch.float64) + 0.5),
                                (m.bias, lambda: torch.randn(n, generator=g, dtype=torch.float64) * 0.1)):
                    if t is not None:
                        t.copy_(draw())
    return model


def silence_(model: nn.Module, graph, removals) -> nn.Module:
    """Make the channels to remove carry exactly zero into every reader (in place)."""
    from pruning_lib.graph import HEAD_OUT
    from pruning_lib.layers import handler_for
    every = graph.dfcs + graph.unprunable + graph.grouped          # by index (a DFC's .index)
    with torch.no_grad():
        for key, chans in removals.items():
            for ref in every[key].feed_out:
                m = model.get_submodule(ref.module)
                if ref.role == HEAD_OUT:                           # a head: its output projection columns
                    weight, cols = handler_for(m).head_columns(m, ref.indices(chans))
                    weight[:, cols] = 0
                elif hasattr(handler_for(m), "in_weight"):         # an attention reading channels
                    handler_for(m).in_weight(m)[:, ref.indices(chans)] = 0
                else:
                    m.weight[:, ref.indices(chans)] = 0
    return model


def assert_exact_prune(model: nn.Module, graph, removals: dict, shape: tuple, seed: int = 0, what: str = ""):
    """Prune ``removals`` (DFC index -> channels) from a float64 copy of ``model`` whose removed
    channels are silenced; the pruned model must compute exactly the silenced original's output."""
    from pruning_lib.measure import count_parameters
    from pruning_lib.surgery import prune
    reference = silence_(randomised(model, seed=seed), graph, removals)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    pruned = prune(reference, graph, removals)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x), rtol=1e-10, atol=1e-10,
                                   msg=lambda m: f"{what} DFCs {sorted(removals)}: {m}")
    assert count_parameters(pruned) < count_parameters(reference), what
    return pruned


class CatNet(nn.Module):
    """Two branches concatenated along channels, a BN over the concatenation, flatten into Linear."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(3, 6, 1, bias=True)
        self.bn_cat = nn.BatchNorm2d(14)
        self.conv_c = nn.Conv2d(14, 10, 3, padding=1)
        self.bn_c = nn.BatchNorm2d(10)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x):
        a = torch.relu(self.bn_a(self.conv_a(x)))
        b = self.conv_b(x)
        y = torch.relu(self.bn_cat(torch.cat([a, b], dim=1)))
        y = self.pool(torch.relu(self.bn_c(self.conv_c(y))))
        return self.fc(y.view(y.size(0), -1))


class BranchNet(nn.Module):
    """A stem, two branches (plain conv; depthwise + pointwise) that rejoin by addition,
    a second concatenation of the stream with itself, global pooling and two Linear layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(12)
        self.left = nn.Conv2d(12, 12, 3, padding=1, bias=False)
        self.bn_l = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.bn_dw = nn.BatchNorm2d(12)
        self.pw = nn.Conv2d(12, 12, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(12)
        self.head = nn.Conv2d(24, 16, 1)
        self.fc1 = nn.Linear(16, 20)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(20, 4)

    def forward(self, x):
        s = nn.functional.relu(self.bn0(self.stem(x)))
        left = self.bn_l(self.left(s))
        right = self.bn_pw(self.pw(nn.functional.relu6(self.bn_dw(self.dw(s)))))
        s = torch.relu(s + left + right)
        y = self.head(torch.cat([s, s * 0.5], 1))
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)
        return self.fc2(self.drop(torch.relu(self.fc1(y))))


class ShuffleNet(nn.Module):
    """A channel shuffle (view + transpose): the graph must keep those channels whole."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


class DataDependent(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(-x)


TOYS = {"catnet": CatNet, "branchnet": BranchNet}


class SharedBN(nn.Module):
    """One BatchNorm applied to two different conv outputs: its entry k serves both, so the two
    convs' channels are one DFC."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 6, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.conv_a2 = nn.Conv2d(6, 4, 1)
        self.conv_b2 = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        a = self.conv_a2(torch.relu(self.bn(self.conv_a(x))))
        b = self.conv_b2(torch.relu(self.bn(self.conv_b(x))))
        y = torch.cat([a, b], 1).mean((2, 3))
        return self.fc(y)


class ChannelPad(nn.Module):
    """Zero-padding along the channel dimension (option-A shortcut style): the padded channels
    have no producer, so the stream must stay whole."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        y = self.conv2(x) + nn.functional.pad(x, (0, 0, 0, 0, 2, 2))
        return self.conv3(torch.relu(y))


class OpNet(nn.Module):
    """conv1 -> BN -> ReLU -> ``op`` -> conv2 -> global pool -> fc: ``op`` (a plain function,
    traced inline) takes and returns an 8-channel map, e.g. a max over channels used as a gate."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = self.op(torch.relu(self.bn1(self.conv1(x))))
        y = torch.relu(self.conv2(y))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class OpNet3D(nn.Module):
    """conv1 -> mean over height, a 3-D (N, C, W) tensor -> ``op`` -> mean over width -> fc."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.op(torch.relu(self.conv1(x)).mean(2)).mean(-1))


class MyConv(nn.Conv2d):
    """A user's Conv2d subclass (torch.fx traces into it unless it is named in leaf_modules)."""


class Chain(nn.Module):
    """conv1 -> bn1 -> ReLU -> conv2 -> bn2 -> ReLU -> mean -> fc, with a replaceable conv2 and
    BN options; ``keywords``: the BNs and torch.cat are called with keyword arguments."""

    def __init__(self, conv2: nn.Module | None = None, keywords: bool = False, **bn_kwargs):
        super().__init__()
        self.keywords = keywords
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8, **bn_kwargs)
        self.conv2 = conv2 if conv2 is not None else nn.Conv2d(8, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(12 if keywords else 6, **bn_kwargs)
        self.fc = nn.Linear(12 if keywords else 6, 4)

    def forward(self, x):
        if self.keywords:
            y = torch.relu(self.bn1(input=self.conv1(x)))
            y = self.conv2(y)
            y = torch.relu(self.bn2(input=torch.cat(tensors=[y, y * 0.5], dim=1)))
        else:
            y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(y.mean((2, 3)))


class Tied(nn.Module):
    """conv2 and conv3 share one weight Parameter (tied weights)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.conv3.weight = self.conv2.weight
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc(y.mean((2, 3)))


class GroupedNet(nn.Module):
    """ResNeXt-like: a bottleneck whose middle conv is grouped (4 groups), a residual stream, a
    depthwise conv with a channel multiplier, a grouped conv added to its own input, and a grouped
    conv reading a concatenation of two convs (``straddle``: 3 + 5 channels, groups of 2 cut
    across the boundary, so that space is refused)."""

    def __init__(self, straddle: bool = False):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c1, self.bn1 = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.g, self.bn2 = nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(12)
        self.c3, self.bn3 = nn.Conv2d(12, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.mult, self.bn4 = nn.Conv2d(16, 32, 3, padding=1, groups=16), nn.BatchNorm2d(32)
        self.g2 = nn.Conv2d(32, 32, 1, groups=8)
        self.a, self.b = nn.Conv2d(32, 3 if straddle else 4, 1), nn.Conv2d(32, 5 if straddle else 4, 1)
        self.g3 = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        s = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.c1(s)))
        y = torch.relu(self.bn2(self.g(y)))
        s = torch.relu(s + self.bn3(self.c3(y)))
        z = torch.relu(self.bn4(self.mult(s)))
        z = z + self.g2(z)
        z = torch.relu(self.g3(torch.cat([self.a(z), self.b(z)], 1)))
        return self.fc(z.mean((2, 3)))


class LayerScaleNet(nn.Module):
    """A ConvNeXt-like block without its LayerNorm: channels-last MLP (permute, Linear, GELU,
    Linear, permute back), a per-channel layer scale (C, 1, 1) multiplied by broadcast, a residual
    addition; a conv reads the stream. The stream (stem, fc2, layer scale) and the hidden units
    are both prunable; ``shared_scale`` also reads the scale elsewhere (then it must stay whole)."""

    def __init__(self, c: int = 6, hidden: int = 12, shared_scale: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.fc1 = nn.Linear(c, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, c)
        self.layer_scale = nn.Parameter(torch.rand(c, 1, 1) + 0.5)
        self.head = nn.Conv2d(c, 4, 1)
        self.shared_scale = shared_scale

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(y))).permute(0, 3, 1, 2)
        x = x + self.layer_scale * y
        if self.shared_scale:
            x = x + self.layer_scale.sum()
        return self.head(x)


class TokenNet(nn.Module):
    """A ViT-like stem without LayerNorms: patches by a strided conv, flattened to tokens
    (reshape, transpose), a class token (1, 1, C) concatenated, a positional embedding (1, L, C)
    added, a token MLP with a residual, a mean over tokens, a Linear head. The stream (patch conv,
    class token, positional embedding, fc2) and the MLP hidden units are prunable."""

    def __init__(self, c: int = 8, hidden: int = 10, tokens: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(3, c, 4, stride=4)
        self.class_token = nn.Parameter(torch.randn(1, 1, c))
        self.pos_embedding = nn.Parameter(torch.randn(1, tokens + 1, c))
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = self.proj(x)
        n, c = x.shape[0], x.shape[1]
        x = x.reshape(n, c, -1).transpose(1, 2)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(dim=1))


class LayerNormMLP(nn.Module):
    """Tokens through a LayerNorm before an MLP: the LayerNorm's channels are refused (not exact),
    the MLP hidden units are prunable; with ``inexact_norms`` the normalised stream is too."""

    def __init__(self, c: int = 6, hidden: int = 8):
        super().__init__()
        self.embed = nn.Linear(5, c)
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x):                      # x: (N, L, 5)
        return self.fc2(torch.tanh(self.fc1(self.norm(self.embed(x))))).sum(1)

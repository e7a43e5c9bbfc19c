"""DFPC saliency: the convolution-based scores against a brute-force unrolled-matrix computation.

The reference below builds every feed-in/feed-out layer as an explicit sparse matrix from the
definition of a convolution (index arithmetic, no torch conv call), a global average pool as an
explicit averaging matrix, and evaluates the paper's formula
S_k = sum_b sum_{a->b} 1^T |M_b|[:, k-block] d_{a,k} |M_a|[k-block, :] 1 literally per channel.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pruning_lib.graph import discover
from pruning_lib.scoring import ChannelScores, get_criterion, l1_scores, random_scores
from pruning_lib.scoring.dfpc import UnsupportedLayerError, closed_form_score, dfpc_scores
from pruning_lib.course.models import get_model
from tests.toy_models import CatNet


class CatResNet(nn.Module):
    """A concatenation of two strided branches, a residual stream fed by a dilated conv, a 1x1
    projection and a block that both reads and writes the stream, then two readers of the stream:
    an unpadded strided conv flattened into a Linear, and a Linear after global average pooling."""

    def __init__(self):
        super().__init__()
        self.conv0, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv1, self.bn1 = nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(8, 4, 1, stride=2, bias=True), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(10, 12, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(12)
        self.conv4, self.bn4 = nn.Conv2d(10, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.conv6, self.bn6 = nn.Conv2d(12, 12, (1, 3), padding=(0, 1), bias=False), nn.BatchNorm2d(12)
        self.conv5, self.bn5 = nn.Conv2d(12, 7, 3, stride=2, bias=False), nn.BatchNorm2d(7)
        self.fc = nn.Linear(7 * 3 * 3, 5)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.bn0(self.conv0(x)))
        y = torch.relu(torch.cat([self.bn1(self.conv1(x)), self.bn2(self.conv2(x))], 1))
        t = torch.relu(self.bn3(self.conv3(y)) + self.bn4(self.conv4(y)))
        s = torch.relu(t + self.bn6(self.conv6(t)))
        z = torch.relu(self.bn5(self.conv5(s)))
        return self.fc(torch.flatten(z, 1)) + self.fc2(torch.flatten(nn.functional.adaptive_avg_pool2d(s, 1), 1))


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics (negative gammas included), in float64."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) * 3 - 1.5
            m.running_var = torch.rand(n, generator=g) * 2 + 0.2
            m.running_mean = torch.randn(n, generator=g)
    return model.double().eval()


# --------------------------------------------------------------------------- brute force

def _conv_matrix(conv: nn.Conv2d, size_in: tuple):
    """|M| of a conv as an explicit sparse (C_out*Ho*Wo, C_in*H*W) matrix, from the definition:
    out[o, y, x] = sum_{c,i,j} W[o,c,i,j] in[c, y*s - p + i*d, x*s - p + j*d] (zero outside)."""
    O, C, KH, KW = conv.weight.shape
    H, W = size_in
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    Ho = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    full = (O, Ho, Wo, C, KH, KW)

    def axis(n, dim):                     # arange(n) laid along one of the six axes
        shape = [1] * 6
        shape[dim] = n
        return torch.arange(n).view(shape)

    o, y, x, c, i, j = (axis(n, d) for d, n in enumerate(full))
    iy, ix = y * sh - ph + i * dh, x * sw - pw + j * dw
    ok = ((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)).expand(full)
    rows = ((o * Ho + y) * Wo + x).expand(full)[ok]
    cols = ((c * H + iy) * W + ix).expand(full)[ok]
    vals = conv.weight.detach().double().abs().view(O, 1, 1, C, KH, KW).expand(full)[ok]
    M = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (O * Ho * Wo, C * H * W),
                                check_invariants=True, is_coalesced=True)   # row-major, unique
    return M, (Ho, Wo)


def _maxpool_matrix(model, graph, a: str, b: str) -> torch.Tensor:
    """The (C*Hb*Wb, C*Ha*Wa) 0/1 matrix of the max-pool windows between a and b (bounds the pool)."""
    pool = next(m for m in model.modules() if isinstance(m, nn.MaxPool2d))
    C, Ha, Wa = graph.shapes[a][1][1:]
    Hb, Wb = graph.shapes[b][0][2:]
    k, s, p = pool.kernel_size, pool.stride, pool.padding
    P = torch.zeros(C * Hb * Wb, C * Ha * Wa, dtype=torch.float64)
    for c in range(C):
        for y in range(Hb):
            for x in range(Wb):
                for i in range(k):
                    for j in range(k):
                        iy, ix = y * s - p + i, x * s - p + j
                        if 0 <= iy < Ha and 0 <= ix < Wa:
                            P[(c * Hb + y) * Wb + x, (c * Ha + iy) * Wa + ix] = 1.0
    return P


DENSE_LIMIT = 4_000_000       # unrolled matrices up to this many entries are used densely


def _brute_force(model: nn.Module, graph) -> dict:
    """The paper's formula with unrolled matrices, per channel: literally, as dense block products,
    where the matrices are small; for large sparse ones the ones-vector products are taken first."""
    mats = {}

    def matrix(name):                              # |M| and the output positions per channel
        if name not in mats:
            m = model.get_submodule(name)
            if isinstance(m, nn.Conv2d):
                shape_in = graph.shapes[name][0]
                M, (Ho, Wo) = _conv_matrix(m, tuple(shape_in[2:]))
                if M.shape[0] * M.shape[1] > DENSE_LIMIT:    # keep 1^T|M| and |M|1, read off the entries
                    r, c = M.indices()
                    colsum = torch.zeros(M.shape[1], dtype=torch.float64).index_add_(0, c, M.values())
                    rowsum = torch.zeros(M.shape[0], dtype=torch.float64).index_add_(0, r, M.values())
                    M = (colsum, rowsum)
                else:
                    M = M.to_dense()
                mats[name] = (M, Ho * Wo, shape_in[2] * shape_in[3])
            else:
                mats[name] = (m.weight.detach().double().abs(), 1, 1)
        return mats[name]

    out = {}
    for dfc in graph.dfcs:
        s = torch.zeros(dfc.channels, dtype=torch.float64)
        for rb in dfc.feed_out:
            Mb, _, p_in_b = matrix(rb.module)
            for a in dfc.upstream.get(rb.module, []):
                Ma, p_out_a, _ = matrix(a)
                ra = next(r for r in dfc.feed_in if r.module == a)
                bn = dfc.bn_after.get(a)
                mb = Mb
                if isinstance(model.get_submodule(rb.module), nn.Linear):
                    if rb.stride == 1 and p_out_a > 1:       # global average pooling before the Linear
                        C = Mb.shape[1]
                        avg = torch.zeros(C, C * p_out_a, dtype=torch.float64)
                        for c in range(C):
                            avg[c, c * p_out_a:(c + 1) * p_out_a] = 1.0 / p_out_a
                        mb = Mb @ avg
                    width = p_out_a
                else:
                    width = p_in_b
                    if p_in_b != p_out_a:               # a max-pool between: its 0/1 window matrix
                        mb = Mb @ _maxpool_matrix(model, graph, a, rb.module)
                        width = p_out_a
                if isinstance(mb, tuple) or isinstance(Ma, tuple):   # large: ones-vector products first
                    colsum = mb[0] if isinstance(mb, tuple) else mb.sum(0)
                    rowsum = Ma[1] if isinstance(Ma, tuple) else Ma.sum(1)
                    mb_, Ma_ = colsum[None, :], rowsum[:, None]
                else:
                    mb_, Ma_ = mb, Ma
                for k in range(dfc.channels):
                    ka = ra.offset + k
                    kb = rb.offset + k
                    d = 1.0
                    if bn is not None:
                        m = model.get_submodule(bn)
                        d = (m.weight[ka].abs() / torch.sqrt(m.running_var[ka] + m.eps)).item()
                    block_a = Ma_[ka * p_out_a:(ka + 1) * p_out_a, :]
                    block_b = mb_[:, kb * width:(kb + 1) * width]
                    s[k] += torch.ones(block_b.shape[0], dtype=torch.float64) @ block_b @ (
                        d * block_a) @ torch.ones(block_a.shape[1], dtype=torch.float64)
        out[dfc] = s
    return out


def _assert_close(scores: ChannelScores, ref: dict):
    for dfc, r in ref.items():
        got = scores[dfc]
        assert got.shape == r.shape
        rel = ((got - r).abs() / r.abs().clamp_min(1e-300)).max().item()
        assert rel < 1e-6, f"DFC #{dfc.index} ({dfc.A} -> {dfc.B}): relative error {rel:.2e}"


@pytest.mark.parametrize("size", [(32, 32), (20, 28)])
def test_resnet20_matches_unrolled_matrices(size):
    model = _randomise_bn(get_model("resnet20"))
    graph = discover(model, (1, 3) + size)
    assert len(graph.dfcs) == 12 and graph.num_coupled == 3
    scores = dfpc_scores(model, graph)
    assert set(scores.scores) == set(graph.dfcs)
    _assert_close(scores, _brute_force(model, graph))


def test_concatenation_toy_matches_unrolled_matrices():
    model = _randomise_bn(CatResNet(), seed=1)
    graph = discover(model, (1, 3, 15, 15))
    offsets = {r.offset for d in graph.dfcs for r in d.feed_out if r.module == "conv3"}
    assert offsets == {0, 6}, "the toy must exercise concatenation offsets"
    strides = {r.stride for d in graph.dfcs for r in d.feed_out if r.module == "fc"}
    assert strides == {9}, "the toy must exercise a flattened Linear reader"
    scores = dfpc_scores(model, graph)
    _assert_close(scores, _brute_force(model, graph))
    assert all((s > 0).all() for s in scores.scores.values())


class PoolStemNet(nn.Module):
    """An ImageNet-style stem: conv, BN, ReLU, a 3x3 stride-2 max-pool, then a residual block."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(x + self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_max_pool_between_layers_matches_window_matrix():
    model = _randomise_bn(PoolStemNet(), seed=3)
    graph = discover(model, (1, 3, 22, 22))
    assert graph.shapes["pool"][0][2:] != graph.shapes["pool"][1][2:]
    _assert_close(dfpc_scores(model, graph), _brute_force(model, graph))


def test_upstream_pairs_only():
    """In ResNet-20's first stream, block 2's last conv does not reach block 1's first conv: adding
    weight to it must not change what block 1's first conv contributes."""
    model = _randomise_bn(get_model("resnet20"))
    graph = discover(model, (1, 3, 32, 32))
    stream = next(d for d in graph.dfcs if "layers.0.0.conv1" in d.B)
    assert "layers.0.1.conv2" not in stream.upstream["layers.0.0.conv1"]
    before = dfpc_scores(model, graph)[stream].clone()
    model.layers[0][1].conv2.weight.data *= 3                  # block 2's output feeds the stream
    after = dfpc_scores(model, graph)[stream]
    assert (after > before).all()
    # only pairs with a downstream reader grew: rescaling by 3 scales exactly those pairs
    model.layers[0][1].conv2.weight.data /= 3
    assert torch.allclose(dfpc_scores(model, graph)[stream], before, rtol=1e-12)


def test_bn_factor_and_closed_form():
    model = _randomise_bn(CatResNet(), seed=2)
    graph = discover(model, (1, 3, 15, 15))
    scores = dfpc_scores(model, graph)
    dfc = next(d for d in graph.dfcs if d.A == ["conv2"])             # 1x1 conv into a dilated 3x3 reader
    model.bn2.weight.data *= -2                                       # |gamma| doubles, sign ignored
    assert torch.allclose(dfpc_scores(model, graph)[dfc], 2 * scores[dfc], rtol=1e-12)
    model.bn2.weight.data /= -2
    for d in graph.dfcs:                   # interior approximation: an upper bound, exact for 1x1/Linear
        cf = closed_form_score(model, d, graph)
        assert (cf >= scores[d] * (1 - 1e-12)).all()
    fc_dfc = next(d for d in graph.dfcs if d.A == ["conv5"])           # read only by a flattened Linear
    assert torch.allclose(closed_form_score(model, fc_dfc, graph), scores[fc_dfc], rtol=1e-12)


def test_baselines_share_the_interface():
    model = get_model("resnet20").eval()
    graph = discover(model, (1, 3, 32, 32))
    l1 = l1_scores(model, graph)
    stem = next(d for d in graph.dfcs if "conv1" in d.A)
    expected = sum(model.get_submodule(a).weight.detach().double().abs().flatten(1).sum(1) for a in stem.A)
    assert torch.allclose(l1[stem], expected)
    r1, r2, r3 = (random_scores(model, graph, seed=s) for s in (0, 0, 1))
    v1, keys = r1.flat()
    assert len(keys) == len(v1) == graph.num_channels == 448
    assert torch.equal(v1, r2.flat()[0]) and not torch.equal(v1, r3.flat()[0])
    for name in ("dfpc", "l1", "random"):
        assert get_criterion(name)(model, graph).method == name
    with pytest.raises(ValueError, match="unknown criterion"):
        get_criterion("taylor")


def test_unsupported_resampling_is_explained():
    model = CatNet().eval()                  # a max-pool between conv_c and its flattened Linear reader
    with pytest.raises(UnsupportedLayerError, match="resampling"):
        dfpc_scores(model, input_shape=(1, 3, 8, 8))


def test_mean_normalisation_divides_by_each_dfcs_pair_count():
    """``normalise="mean"``: S_k over the number of (feed-in, reader) pairs; a DFC inside a block
    has one pair and keeps its score, a coupled stream's scores shrink by its pair count."""
    from pruning_lib.scoring import get_criterion
    from pruning_lib.pruning.global_pruning import removal_order
    torch.manual_seed(0)
    model = get_model("resnet20").eval()
    graph = discover(model, (1, 3, 32, 32))
    total, mean = dfpc_scores(model, graph), get_criterion("dfpc_mean")(model, graph)
    assert mean.method == "dfpc_mean"
    coupled = 0
    for dfc in graph.dfcs:
        pairs = sum(len(dfc.upstream.get(r.module, [])) for r in dfc.feed_out)
        assert torch.allclose(mean[dfc], total[dfc] / pairs)
        coupled += pairs > 1
    assert coupled == 3                                           # ResNet-20's three residual streams
    first = {m: next(i for i, (d, _) in enumerate(removal_order(s, graph.dfcs))
                     if sum(len(d.upstream.get(r.module, [])) for r in d.feed_out) > 1)
             for m, s in (("sum", total), ("mean", mean))}
    assert first["mean"] < first["sum"]                           # coupled channels come earlier
    with pytest.raises(ValueError, match="normalise='max'"):
        dfpc_scores(model, graph, normalise="max")

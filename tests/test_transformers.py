"""Transformers and channels-last networks (issue 30): Linear layers over tokens (N, L, C) and
channels-last maps (N, H, W, C), permute / transpose / reshape around the channel axis, per-channel
model tensors broadcast over the channels (layer scale, class token, positional embedding), and
LayerNorm refused with its reason. Tiny configurations built from torchvision's own classes; every
prunable DFC is checked exact in float64 (pruned == the original with the removed channels'
readers zeroed)."""
from __future__ import annotations

import copy
import functools
import io

import pytest
import torch
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.maxvit import MaxVit
from torchvision.models.swin_transformer import (PatchMergingV2, ShiftedWindowAttention, ShiftedWindowAttentionV2,
                                                 SwinTransformer, SwinTransformerBlockV2)
from torchvision.models.vision_transformer import VisionTransformer

from pruning_lib.graph import PARAM, discover
from pruning_lib.scoring.dfpc import UnsupportedLayerError, dfpc_scores
from pruning_lib.scoring.magnitude import l1_scores, random_scores
from pruning_lib.surgery import PruningError, predicted_parameters, prune, resize_to_state
from pruning_lib.measure import count_parameters
from toy_models import LayerNormMLP, LayerScaleNet, TokenNet, assert_exact_prune

SHAPE = (1, 3, 32, 32)
FAMILIES = ["convnext", "vit", "swin", "swin_v2", "maxvit"]


def assert_reloads(pruned: nn.Module, fresh: nn.Module, x: torch.Tensor, exact: bool = False) -> None:
    """``pruned`` round-trips: pickled whole, and through its state_dict into ``fresh`` (an unpruned
    model of its class, resized by ``resize_to_state``); both compute what ``pruned`` computes on ``x``."""
    buf = io.BytesIO()
    torch.save(pruned, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    resize_to_state(fresh, pruned.state_dict())
    fresh.load_state_dict(pruned.state_dict())
    tol = {"rtol": 0, "atol": 0} if exact else {}
    with torch.no_grad():
        want = pruned.eval()(x)
        torch.testing.assert_close(loaded.eval()(x), want, **tol)
        torch.testing.assert_close(fresh.eval()(x), want, **tol)

def tiny(family: str) -> nn.Module:
    torch.manual_seed(0)
    if family == "convnext":
        return ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=5)
    if family == "vit":
        return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                 mlp_dim=32, num_classes=5)
    if family in ("swin", "swin_v2"):
        # two blocks a stage: the second one shifts its windows; 3x3 windows pad the 8x8 and 4x4 maps
        v2 = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if family == "swin_v2" else {}
        return SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[2, 4],
                               window_size=[3, 3], num_classes=5, **v2)
    return MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16],
                  block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0, num_classes=5)


@functools.lru_cache(maxsize=None)
def family(name: str):
    model = tiny(name).eval()
    return model, discover(model, SHAPE)


def mlp_pairs(model: nn.Module) -> set[tuple[str, str]]:
    """(first, second) Linear of every block MLP: Sequentials whose Linears widen then narrow."""
    pairs = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential) and not name.endswith("cpb_mlp"):   # Swin V2's bias MLP: inside the attention
            lin = [(f"{name}.{k}", c) for k, c in m.named_children() if isinstance(c, nn.Linear)]
            if len(lin) == 2 and lin[0][1].out_features == lin[1][1].in_features > lin[0][1].in_features:
                pairs.add((lin[0][0], lin[1][0]))
    return pairs


@pytest.mark.parametrize("name", FAMILIES)
def test_every_mlp_hidden_space_is_a_prunable_dfc(name):
    model, g = family(name)
    pairs = mlp_pairs(model)
    # ConvNeXt's inverted bottleneck is a Sequential of conv, permute, norm, Linear, GELU, Linear, permute
    assert pairs or name == "convnext"
    if name == "convnext":
        pairs = {(f"{n}.3", f"{n}.5") for n, m in model.named_modules() if n.endswith(".block")}
    found = {(d.A[0], d.B[0]) for d in g.dfcs if len(d.A) == len(d.B) == 1}
    assert pairs and pairs <= found, pairs - found
    for d in g.dfcs:
        if (d.A[0], d.B[0]) in pairs:
            assert all(r.axis == len(g.shapes[r.module][0]) - 1 for r in d.feed_in + d.feed_out)


@pytest.mark.parametrize("name", FAMILIES)
def test_transformer_dfcs_prune_exactly(name):
    model, g = family(name)
    shape = (2,) + SHAPE[1:]
    every = {i: list(range(0, d.channels, 3)) for i, d in enumerate(g.dfcs)}
    pruned = assert_exact_prune(model, g, every, shape, what=name)
    assert count_parameters(pruned) == predicted_parameters(model, g, every)
    for i, d in enumerate(g.dfcs):
        assert_exact_prune(model, g, {i: [d.channels - 1]}, shape, seed=i, what=name)
    again = discover(pruned, SHAPE)                      # the pruned model is discovered again
    assert [d.channels for d in again.dfcs] == [d.channels - len(every[i]) for i, d in enumerate(g.dfcs)]


@pytest.mark.parametrize("name", FAMILIES)
def test_layernorm_streams_are_refused_with_the_reason(name):
    model, g = family(name)
    reasons = [r for d in g.unprunable for r in d.reasons]
    assert any("normalised together by a LayerNorm" in r and "no removal is exact" in r for r in reasons)
    # no weighted layer is left out of the report: each reads and writes channels of some space
    refs = {r.module for d in g.dfcs + g.unprunable + g.grouped for r in d.feed_in + d.dependent + d.feed_out}
    weighted = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    called = set(g.shapes)
    assert weighted & called <= refs


def test_convnext_layer_scale_joins_the_stream():
    model, g = family("convnext")
    stream = next(d for d in g.unprunable if "features.1.0.block.5" in d.A)
    assert ("features.1.0.layer_scale" in stream.params
            and next(r for r in stream.dependent if r.role == PARAM).axis == 0)


def test_layer_scale_is_sliced_with_its_channels():
    net = LayerScaleNet()
    g = discover(net, (1, 3, 8, 8))
    stream = next(d for d in g.dfcs if "stem" in d.A)
    assert set(stream.A) == {"stem", "fc2"} and "dw" in stream.D and stream.params == ["layer_scale"]
    hidden = next(d for d in g.dfcs if d.A == ["fc1"])
    assert hidden.B == ["fc2"] and hidden.feed_in[0].axis == 3
    removals = {stream.index: [0, 4], hidden.index: [1, 2, 11]}
    pruned = assert_exact_prune(net, g, removals, (2, 3, 8, 8))
    assert tuple(pruned.layer_scale.shape) == (4, 1, 1) and pruned.fc1.in_features == 4
    assert count_parameters(pruned) == predicted_parameters(net, g, removals)


def test_a_tensor_read_elsewhere_stays_whole():
    g = discover(LayerScaleNet(shared_scale=True), (1, 3, 8, 8))
    assert not any("stem" in d.A for d in g.dfcs)
    why = " ".join(r for d in g.unprunable if "stem" in d.A for r in d.reasons)
    assert "layer_scale is also read at node" in why
    assert any(d.A == ["fc1"] for d in g.dfcs)          # the hidden units do not depend on it


def test_tokens_class_token_and_positional_embedding():
    net = TokenNet()
    g = discover(net, (1, 3, 8, 8))
    stream = next(d for d in g.dfcs if "proj" in d.A)
    assert set(stream.A) == {"proj", "fc2"} and set(stream.B) == {"fc1", "head"}
    assert sorted(stream.params) == ["class_token", "pos_embedding"]
    assert {r.axis for r in stream.dependent} == {2}
    pruned = assert_exact_prune(net, g, {stream.index: [1, 6], 1: [0, 3]}, (2, 3, 8, 8))
    assert tuple(pruned.pos_embedding.shape) == (1, 5, 6) and tuple(pruned.class_token.shape) == (1, 1, 6)


@pytest.mark.parametrize("op,ok", [
    (lambda y: y.permute(0, 2, 3, 1).flatten(1, 2).transpose(1, 2).reshape(y.shape), True),  # back to NCHW
    (lambda y: y.permute(0, 2, 3, 1).reshape(y.shape), False),          # channels mixed into space
    (lambda y: torch.swapaxes(y, 1, 3).swapaxes(3, 1), True),
    (lambda y: y.transpose(1, 2).mean(1, keepdim=True).transpose(1, 2).expand_as(y) * 1.0 + y, False),
])
def test_axis_moves(op, ok):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.b(op(self.a(x)))

    net = Net()
    g = discover(net, (1, 3, 4, 4))
    assert any(d.A == ["a"] for d in g.dfcs) == ok, g.table()
    if ok:
        assert_exact_prune(net, g, {0: [0, 5]}, (2, 3, 4, 4))


def test_layernorm_opt_in_is_reported_inexact():
    net = LayerNormMLP()
    exact = discover(net, (1, 4, 5))
    assert [d.A for d in exact.dfcs] == [["fc1"]]
    assert any("LayerNorm norm" in r and "inexact_norms=True" in r for d in exact.unprunable for r in d.reasons)
    g = discover(net, (1, 4, 5), inexact_norms=True)
    normed = next(d for d in g.dfcs if d.A == ["embed"])
    assert normed.D == ["norm"] and not normed.exact and "LayerNorm norm" in normed.inexact[0]
    assert all(d.exact for d in g.dfcs if d is not normed) and "NOT exact" in g.table()
    x = torch.randn(3, 4, 5)
    with pytest.warns(UserWarning, match=r"not exact.*LayerNorm norm"):
        pruned = prune(net, g, {normed.index: [0, 2]})
    assert pruned.norm.normalized_shape == (4,) and pruned.fc1.in_features == 4
    from pruning_lib.surgery import output_change
    change = output_change(net, pruned, x)
    assert change.max_abs > 0 and not change.exact and change.relative > 0


def test_criteria_score_the_new_units_and_dfpc_refuses_them():
    model, g = family("vit")
    for scores in (l1_scores(model, g), random_scores(model, g)):
        assert set(scores.scores) == set(g.dfcs) and all((s >= 0).all() for s in scores.scores.values())
    mlp = next(d for d in g.dfcs if d.A[0].endswith("mlp.0"))
    fc1 = model.get_submodule(mlp.A[0])
    assert torch.allclose(l1_scores(model, g)[mlp], fc1.weight.detach().double().abs().sum(1))
    with pytest.raises(UnsupportedLayerError, match=r"conv-BN-conv.*axis 2 \(tokens.*l1_scores"):
        dfpc_scores(model, g)
    with pytest.raises(UnsupportedLayerError, match=r"layer_scale is broadcast"):
        dfpc_scores(LayerScaleNet(), input_shape=(1, 3, 8, 8))


class SelfAttention(nn.Module):
    """Tokens (N, L, 5) -> Linear -> nn.MultiheadAttention (3 heads of 4) + residual -> ReLU -> Linear."""

    def __init__(self, batch_first: bool = True, need_weights: bool = False):
        super().__init__()
        self.emb = nn.Linear(5, 12)
        self.att = nn.MultiheadAttention(12, 3, batch_first=batch_first)
        self.fc = nn.Linear(12, 4)
        self.need_weights = need_weights

    def forward(self, x):
        y = self.emb(x)
        a, w = self.att(y, y, y, need_weights=self.need_weights)
        out = self.fc(torch.relu(a + y)).sum(1)
        return out + w.sum((1, 2))[:, None] if self.need_weights else out


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_heads_and_channels_prune_exactly(batch_first):
    net = SelfAttention(batch_first)
    g = discover(net, (2, 6, 5))
    heads = next(d for d in g.dfcs if d.A == ["att"] and d.B == ["att"])
    stream = next(d for d in g.dfcs if "emb" in d.A)
    assert heads.channels == 3 and [r.role for r in heads.feed_in + heads.feed_out] == ["head_in", "head_out"]
    assert set(stream.A) == {"emb", "att"} and set(stream.B) == {"att", "fc"}
    for removals in ({heads.index: [1]}, {heads.index: [0, 2]}, {stream.index: [0, 5, 11]},
                     {heads.index: [2], stream.index: [3, 4]}):
        pruned = assert_exact_prune(net, g, removals, (2, 6, 5), what=str(removals))
        assert count_parameters(pruned) == predicted_parameters(net, g, removals)
    assert pruned.att.num_heads == 2 and pruned.att.head_dim == 4 and pruned.att.in_proj_weight.shape == (24, 10)
    again = discover(pruned, (2, 6, 5))                    # still an attention with heads as a unit
    assert sorted(d.channels for d in again.dfcs) == [2, 10]
    assert_reloads(pruned, SelfAttention(batch_first).double(), torch.randn(2, 6, 5, dtype=torch.float64))


def test_used_attention_weights_keep_the_heads():
    """The weights returned are averaged over the heads: once read, no head can go exactly."""
    net = SelfAttention(need_weights=True)
    g = discover(net, (2, 6, 5))
    assert not any(d.A == ["att"] and d.B == ["att"] for d in g.dfcs)
    assert any("attention weights of att (averaged over its heads) are used" in r
               for d in g.unprunable for r in d.reasons)
    stream = next(d for d in g.dfcs if "emb" in d.A)
    assert_exact_prune(net, g, {stream.index: [1, 7]}, (2, 6, 5))


def test_l1_scores_a_head_by_its_qkv_rows():
    net = SelfAttention()
    g = discover(net, (2, 6, 5))
    heads = next(d for d in g.dfcs if d.A == ["att"] and d.B == ["att"])
    w = net.att.in_proj_weight.detach().double().abs().view(3, 3, 4, 12)
    torch.testing.assert_close(l1_scores(net, g)[heads], w.sum((0, 2, 3)))


HEADED = {"vit": "MultiheadAttention", "maxvit": "RelativePositionalMultiHeadAttention",
          "swin": "ShiftedWindowAttention", "swin_v2": "ShiftedWindowAttentionV2"}


@pytest.mark.parametrize("name", sorted(HEADED))
def test_attention_heads_are_units(name):
    model, g = family(name)
    units = [d for d in g.dfcs if d.A == d.B and d.feed_in[0].role == "head_in"]
    attn = [n for n, m in model.named_modules() if type(m).__name__ == HEADED[name]]
    assert sorted(d.A[0] for d in units) == sorted(attn) and attn
    assert all([r.role for r in d.feed_in + d.feed_out] == ["head_in", "head_out"] for d in units)
    assert all(d.channels == model.get_submodule(d.A[0]).num_heads for d in units if name.startswith("swin"))


def test_maxvit_pruned_heads_reload_from_state():
    model, g = family("maxvit")
    units = {d.index: [0] for d in g.dfcs if d.feed_in[0].role == "head_in"}
    pruned = prune(model, g, units)
    assert_reloads(pruned, tiny("maxvit"), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", ["swin", "swin_v2"])
def test_swin_heads_prune_exactly_and_reload(name):
    """Random heads of every Swin attention, with MLP hidden units, pruned == those heads' output
    projection columns zeroed; the pruned model pickles and rebuilds from its state_dict."""
    model, g = family(name)
    rng = torch.Generator().manual_seed(3)
    removals = {}
    for d in g.dfcs:
        k = 1 + int(torch.randint(d.channels - 1, (1,), generator=rng))     # 1 .. channels - 1
        removals[d.index] = sorted(torch.randperm(d.channels, generator=rng)[:k].tolist())
    shape = (2,) + SHAPE[1:]
    pruned = assert_exact_prune(model, g, removals, shape, what=name)
    assert count_parameters(pruned) == predicted_parameters(model, g, removals)
    cls = "HeadPrunedWindowAttentionV2" if name == "swin_v2" else "HeadPrunedWindowAttention"
    for d in g.dfcs:
        if d.feed_in[0].role == "head_in":
            m, width = pruned.get_submodule(d.A[0]), model.get_submodule(d.A[0]).proj.in_features // d.channels
            kept = d.channels - len(removals[d.index])
            assert type(m).__name__ == cls and m.num_heads == kept
            assert m.qkv.out_features == 3 * m.proj.in_features == 3 * kept * width     # the head width is kept
            assert (m.logit_scale.shape[0] if name == "swin_v2" else m.relative_position_bias_table.shape[1]) == kept
            if name == "swin_v2":
                assert m.cpb_mlp[2].out_features == kept
    again = discover(pruned, SHAPE)                      # still heads as a unit, fewer of them
    assert sorted(d.channels for d in again.dfcs) == sorted(d.channels - len(removals[d.index]) for d in g.dfcs)
    assert_reloads(pruned, tiny(name).double(), torch.randn(shape, dtype=torch.float64), exact=True)


class WindowNet(nn.Module):
    """Channels-last maps (N, H, W, 3) -> Linear -> Swin window attention (3 heads of 4) + residual ->
    ReLU -> Linear: no LayerNorm, so the stream the attention reads and writes is prunable too."""

    def __init__(self, attention=ShiftedWindowAttention):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Linear(3, 12)
        self.att = attention(12, [3, 3], [1, 1], 3)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        y = self.emb(x)
        return self.fc(torch.relu(self.att(y) + y)).mean((1, 2))


@pytest.mark.parametrize("attention", [ShiftedWindowAttention, ShiftedWindowAttentionV2])
def test_window_attention_channels_and_heads_prune_exactly(attention):
    """The stream through the attention (its qkv columns, its proj rows) and its heads, alone and
    together: the pruned net == the original with the removed channels' and heads' readers zeroed."""
    from pruning_lib.layers import handler_for
    net = WindowNet(attention).double().eval()
    shape = (2, 7, 5, 3)                                  # windows padded, shifted
    g = discover(net, shape)
    heads = next(d for d in g.dfcs if d.A == ["att"] and d.B == ["att"])
    stream = next(d for d in g.dfcs if "emb" in d.A)
    assert set(stream.A) == {"emb", "att"} and set(stream.B) == {"att", "fc"} and heads.channels == 3
    x = torch.randn(shape, dtype=torch.float64)
    for removals in ({heads.index: [1]}, {stream.index: [0, 5, 11]}, {heads.index: [0, 2], stream.index: [3, 4]}):
        reference = copy.deepcopy(net)
        h = handler_for(reference.att)
        with torch.no_grad():
            for c in removals.get(stream.index, []):
                h.in_weight(reference.att)[:, c] = 0
                reference.fc.weight[:, c] = 0
            weight, cols = h.head_columns(reference.att, removals.get(heads.index, []))
            weight[:, cols] = 0
        pruned = prune(reference, g, removals)
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), reference(x), rtol=1e-12, atol=1e-12, msg=str(removals))
        assert count_parameters(pruned) == predicted_parameters(reference, g, removals) < count_parameters(net)
    att = pruned.att
    assert att.num_heads == 1 and att.qkv.weight.shape == (12, 10) and att.proj.weight.shape == (10, 4)


class HalvedWindowAttention(ShiftedWindowAttention):
    """A user's subclass with a forward of its own: what it computes after a cut is not known."""

    def forward(self, x):
        return super().forward(x) / 2


def test_a_window_attention_subclass_is_refused_with_the_reason():
    g = discover(WindowNet(HalvedWindowAttention), (2, 7, 5, 3))
    assert not any("att" in d.A for d in g.dfcs)
    why = " ".join(r for d in g.unprunable for r in d.reasons)
    assert "HalvedWindowAttention subclasses torchvision's ShiftedWindowAttention" in why and "register_handler" in why


@pytest.mark.parametrize("attention", [ShiftedWindowAttention, ShiftedWindowAttentionV2])
@pytest.mark.parametrize("shift", [[0, 0], [1, 1], [2, 1]])
@pytest.mark.parametrize("hw", [(6, 6), (7, 5), (3, 8), (2, 2)])      # whole windows, padded, one axis unshifted
def test_head_pruned_window_attention_computes_what_swin_does(attention, shift, hw):
    """Before any cut, the surgery's class computes exactly torchvision's shifted window attention,
    in eval and in train mode (with dropout: the same random draws from the same seed)."""
    from pruning_lib.layers import HeadPrunedWindowAttention, HeadPrunedWindowAttentionV2
    torch.manual_seed(0)
    theirs = attention(12, [3, 3], shift, 3, attention_dropout=0.3, dropout=0.2).double()
    nn.init.normal_(theirs.qkv.bias)                     # V2 must still ignore the keys' bias
    mine = copy.deepcopy(theirs)
    mine.__class__ = HeadPrunedWindowAttentionV2 if attention is ShiftedWindowAttentionV2 else HeadPrunedWindowAttention
    x = torch.randn(2, *hw, 12, dtype=torch.float64)
    for train in (False, True):
        theirs.train(train), mine.train(train)
        with torch.no_grad():
            torch.manual_seed(1)
            a = theirs(x)
            torch.manual_seed(1)
            b = mine(x)
        assert torch.equal(a, b), (train, (a - b).abs().max())


def test_swin_patch_merging_stays_refused_with_its_reasons():
    """Patch merging concatenates 2x2 neighbours' channels (``_patch_merging_pad``) and normalises
    them together (V1: before its Linear ``reduction``, V2: after): both are refused with the reason."""
    for name in ("swin", "swin_v2"):
        _, g = family(name)
        reasons = [r for d in g.unprunable for r in d.reasons]
        assert any("function _patch_merging_pad" in r and "not understood" in r for r in reasons)
        norm = [" ".join(d.reasons) for d in g.unprunable
                if "features.2.reduction" in (d.B if name == "swin" else d.A)]
        assert norm and "no removal is exact (LayerNorm features.2.norm)" in norm[0], norm
        assert not any("shifted_window_attention" in r for r in reasons)


def test_swin_heads_are_scored_by_l1_and_refused_by_dfpc():
    model, g = family("swin_v2")
    scores = l1_scores(model, g)
    for d in g.dfcs:
        if d.feed_in[0].role == "head_in":
            m = model.get_submodule(d.A[0])
            n, width = m.num_heads, m.proj.in_features // m.num_heads
            w = m.qkv.weight.detach().double().abs().view(3, n, width, -1)
            torch.testing.assert_close(scores[d], w.sum((0, 2, 3)))
    with pytest.raises(UnsupportedLayerError, match="conv-BN-conv"):
        dfpc_scores(model, g)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_head_pruned_attention_computes_what_multihead_attention_does(batch_first, need_weights):
    """Before any cut, the surgery's class equals nn.MultiheadAttention, masks included."""
    from pruning_lib.layers import HeadPrunedMultiheadAttention
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).double().eval()
    mine = copy.deepcopy(mha)
    mine.__class__ = HeadPrunedMultiheadAttention
    x = torch.randn((3, 5, 8) if batch_first else (5, 3, 8), dtype=torch.float64)
    pad = torch.tensor([[False] * 5, [False] * 4 + [True], [False, True] + [False] * 3])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for kwargs in ({}, {"key_padding_mask": pad}, {"attn_mask": causal},
                   {"attn_mask": torch.randn(5, 5, dtype=torch.float64)}, {"attn_mask": causal, "key_padding_mask": pad}):
        with torch.no_grad():
            a, wa = mha(x, x, x, need_weights=need_weights, **kwargs)
            b, wb = mine(x, x, x, need_weights=need_weights, **kwargs)
        torch.testing.assert_close(b, a)
        if need_weights:
            torch.testing.assert_close(wb, wa)

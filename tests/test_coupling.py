"""Coupled-channel discovery: the counts DFPC reports, hand-written models, and refusals."""
import functools

import pytest
import torch
from torch import nn

from pruning_lib.graph import FEED_OUT, UntraceableModelError, discover
from pruning_lib.course.models import get_model
from toy_models import (BranchNet, CatNet, Chain, ChannelPad, DataDependent, MyConv, OpNet, OpNet3D, SharedBN,
                        ShuffleNet, Tied, GroupedNet, assert_exact_prune)

@functools.lru_cache(maxsize=None)
def model(name: str) -> nn.Module:
    """A registry model, built once for the whole file (discovery never modifies it)."""
    return get_model(name)


# (model, input shape, DFCs, coupled DFCs, prunable channels); DFPC's table, ../shared/papers/dfpc.md
PAPER_COUNTS = [
    ("resnet20", (1, 3, 32, 32), 12, 3, 448),
    ("resnet56", (1, 3, 32, 32), 30, 3, 1120),
    ("cifar_resnet50", (1, 3, 32, 32), 37, 5, 11456),
    ("cifar_resnet101", (1, 3, 32, 32), 71, 5, 20160),
    ("torchvision/resnet50", (1, 3, 64, 64), 37, 5, 11456),
    ("torchvision/resnet101", (1, 3, 64, 64), 71, 5, 20160),
    ("torchvision/resnet50", (1, 3, 224, 224), 37, 5, 11456),     # the paper's ImageNet input size
]


@pytest.mark.parametrize("name,shape,n_dfc,n_coupled,n_channels", PAPER_COUNTS)
def test_paper_counts(name, shape, n_dfc, n_coupled, n_channels):
    g = discover(model(name), shape)
    assert (len(g.dfcs), g.num_coupled, g.num_channels) == (n_dfc, n_coupled, n_channels)


def test_resnet20_streams_have_the_expected_members():
    g = discover(get_model("resnet20"), (1, 3, 32, 32))
    coupled = [d for d in g.dfcs if d.coupled]
    assert [d.channels for d in coupled] == [16, 32, 64]
    stage1, stage2 = coupled[0], coupled[1]
    # stage 1 has no projection: the stem is one of its producers
    assert set(stage1.A) == {"conv1", "layers.0.0.conv2", "layers.0.1.conv2", "layers.0.2.conv2"}
    assert set(stage1.B) == {"layers.0.0.conv1", "layers.0.1.conv1", "layers.0.2.conv1",
                             "layers.1.0.conv1", "layers.1.0.shortcut.0"}
    # a shortcut conv is a reader of one stream and a producer of the next
    assert "layers.1.0.shortcut.0" in stage2.A
    # upstream comes from the graph: a block's output reaches only later readers
    assert stage1.upstream["layers.0.1.conv1"] == ["conv1", "layers.0.0.conv2"]
    assert stage1.upstream["layers.1.0.shortcut.0"] == sorted(stage1.A)
    assert stage2.bn_after["layers.1.0.shortcut.0"] == "layers.1.0.shortcut.1"


def test_upstream_is_right_past_block_ten():
    """The released code compared layer-name strings and got this wrong from block 10 on."""
    g = discover(model("cifar_resnet101"), (1, 3, 32, 32))
    stream3 = next(d for d in g.dfcs if d.coupled and d.channels == 1024)
    up = stream3.upstream["layers.2.10.conv1"]
    assert "layers.2.9.conv3" in up and "layers.2.10.conv3" not in up and "layers.2.2.conv3" in up
    assert len(up) == 11            # the shortcut conv and blocks 0..9


@pytest.mark.parametrize("name,n_dfc,n_coupled", [
    ("torchvision/resnet18", 12, 4), ("torchvision/vgg11_bn", 10, 0),
    ("torchvision/mobilenet_v2", 25, 5), ("torchvision/densenet121", 120, 58)])
def test_other_torchvision_models(name, n_dfc, n_coupled):
    g = discover(model(name), (1, 3, 64, 64))
    assert (len(g.dfcs), g.num_coupled) == (n_dfc, n_coupled)
    kinds = {r for d in g.unprunable for r in d.reasons}
    assert kinds == {"network input channels", "network output"}


def test_vgg_linear_reads_flattened_channels():
    g = discover(model("torchvision/vgg11_bn"), (1, 3, 64, 64))
    last = next(d for d in g.dfcs if "classifier.0" in d.B)
    ref = next(r for r in last.feed_out if r.module == "classifier.0")
    assert last.channels == 512 and ref.stride == 49          # AdaptiveAvgPool2d(7) -> 512*7*7


def test_mobilenet_depthwise_is_dependent():
    g = discover(model("torchvision/mobilenet_v2"), (1, 3, 64, 64))
    d = g.dfc_of("features.2.conv.1.0")[0]                 # the second block's depthwise conv
    assert "features.2.conv.1.0" in d.D and d.A == ["features.2.conv.0.0"]


def test_concatenation_offsets():
    g = discover(CatNet(), (1, 3, 8, 8))
    a, b, c = g.dfcs
    assert (a.channels, b.channels, c.channels) == (8, 6, 10)
    assert [(r.module, r.offset) for r in b.dependent + b.feed_out] == [("bn_cat", 8), ("conv_c", 8)]
    assert c.feed_out[0].stride == 16                        # view(N, -1) after a 4x4 map


def test_rejoining_branch_and_self_concatenation():
    g = discover(BranchNet(), (1, 3, 8, 8))
    stream = g.dfcs[0]
    assert stream.coupled and set(stream.A) == {"stem", "left", "pw"}
    assert "dw" in stream.D
    heads = [r for r in stream.feed_out if r.module == "head"]
    assert sorted(r.offset for r in heads) == [0, 12]
    assert [d.channels for d in g.dfcs[1:]] == [16, 20]    # fc1's features are prunable, fc2's are not


def test_unknown_ops_make_channels_unprunable_with_reason():
    g = discover(ShuffleNet(), (1, 3, 8, 8))
    assert {d.A[0] for d in g.dfcs} == {"conv2", "conv3"}  # conv1's channels are shuffled
    reasons = " ".join(r for d in g.unprunable for r in d.reasons)
    assert ".view" in reasons and ".reshape" in reasons


def test_network_output_is_never_prunable():
    for net, shape in [(get_model("resnet20"), (1, 3, 32, 32)), (CatNet(), (1, 3, 8, 8))]:
        g = discover(net, shape)
        fc = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        name = next(n for n, m in net.named_modules() if m is fc)
        assert all(name not in d.A for d in g.dfcs)


def test_untraceable_model_error_names_the_line():
    with pytest.raises(UntraceableModelError, match=r"toy_models.py:\d+.*x.sum\(\) > 0.*leaf_modules"):
        discover(DataDependent(), (1, 3, 8, 8))


def test_leaf_modules_keep_untraceable_parts_whole():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = nn.Conv2d(3, 3, 1)
            self.inner = DataDependent()
            self.post = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.post(self.inner(self.pre(x)))

    g = discover(Wrapper(), (1, 3, 8, 8), leaf_modules=["inner"])
    assert not g.dfcs
    assert any("DataDependent" in r for d in g.unprunable for r in d.reasons)


def test_wrong_input_shape_is_explained():
    with pytest.raises(ValueError, match=r"at module 'conv1' \(Conv2d\).*3 channels.*input_shape"):
        discover(get_model("resnet20"), (1, 1, 32, 32))


def test_discovery_leaves_the_model_alone():
    m = get_model("resnet20").train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    discover(m, (1, 3, 32, 32))
    assert m.training and all(m.training for m in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_feed_out_roles_cover_every_reader():
    g = discover(get_model("resnet56"), (1, 3, 32, 32))
    readers = {r.module for d in g.dfcs for r in d.feed_out if r.role == FEED_OUT}
    convs = {n for n, m in get_model("resnet56").named_modules() if isinstance(m, nn.Conv2d)}
    assert readers == (convs - {"conv1"}) | {"fc"}


def test_shared_batchnorm_couples_its_inputs():
    g = discover(SharedBN(), (1, 3, 8, 8))
    shared = next(d for d in g.dfcs if "bn" in d.D)
    assert set(shared.A) == {"conv_a", "conv_b"} and shared.coupled
    assert shared.D == ["bn"] and set(shared.B) == {"conv_a2", "conv_b2"}


def test_padding_along_channels_is_refused():
    g = discover(ChannelPad(), (1, 3, 8, 8))
    assert g.dfcs == []              # conv1/conv2 feed the padded stream; conv3 gives the output
    reasons = " ".join(r for d in g.unprunable for r in d.reasons)
    assert "padding along the batch or channel axis at node 'pad' (pad=(0, 0, 0, 0, 2, 2)" in reasons


def refusal(g, module: str, role: str = "A") -> str:
    """The reasons why the channels ``module`` feeds in (role "A") or reads (role "B") are
    unprunable ('' when they are prunable)."""
    assert any(module in getattr(d, role) for d in g.dfcs + g.unprunable), module
    return "; ".join(r for d in g.unprunable if module in getattr(d, role) for r in d.reasons)


def assert_every_dfc_exact(net, g, shape, what):
    """Each prunable DFC, pruned alone (a third of its channels), is exact in float64."""
    for k, d in enumerate(g.dfcs):
        assert_exact_prune(net, g, {k: list(range(0, d.channels, 3))}, shape, what=what)


# Tensor ops returning several tensors, along the channel axis: they split or mix channels
TUPLE_OPS_ACROSS_CHANNELS = {
    "max_gate": lambda y: y * torch.sigmoid(y.max(dim=1, keepdim=True)[0]),
    "min_gate": lambda y: y * torch.sigmoid(y.min(1, True)[0]),
    "max_gate_function": lambda y: y * torch.sigmoid(torch.max(y, 1, keepdim=True)[0]),
    "chunk_swap": lambda y: torch.cat([y.chunk(2, 1)[1], y.chunk(2, 1)[0]], 1),
    "chunk_function_swap": lambda y: torch.cat([torch.chunk(y, 2, dim=1)[1], torch.chunk(y, 2, dim=1)[0]], 1),
    "split_swap": lambda y: torch.cat([y.split(4, dim=1)[1], y.split(4, dim=1)[0]], 1),
    "unbind_reversed": lambda y: torch.stack([y.unbind(1)[i] for i in reversed(range(8))], 1),
    "sort_channels": lambda y: y.sort(dim=1)[0],
    "topk_channels": lambda y: y.topk(8, dim=1)[0],
    "max_over_batch": lambda y: y * torch.sigmoid(y.max(0, keepdim=True)[0]),
}
# ... and along a spatial axis: each result keeps the input's channels
TUPLE_OPS_ALONG_SPACE = {
    "chunk_rows_swap": lambda y: torch.cat([y.chunk(2, 2)[1], y.chunk(2, 2)[0]], 2),
    "split_columns_add": lambda y: (lambda s: s[0] + s[3])(y.split(2, dim=3)),
    "max_gate_rows": lambda y: y * torch.sigmoid(y.max(dim=2, keepdim=True)[0]),
    "min_function_rows": lambda y: y - torch.min(y, -2, keepdim=True)[0],
    "sort_columns": lambda y: y.sort(dim=-1)[0],
    "topk_columns": lambda y: y.topk(3, dim=3)[0],
}


@pytest.mark.parametrize("name", list(TUPLE_OPS_ACROSS_CHANNELS))
def test_tuple_ops_across_channels_are_refused(name):
    """Issue 17: the method forms (y.max(dim=1)[0], y.chunk(2, 1), ...) hid the layers reading
    their results, so conv1 was reported prunable; pruning then changed what the gate computes."""
    g = discover(OpNet(TUPLE_OPS_ACROSS_CHANNELS[name]), (1, 3, 8, 8))
    why = refusal(g, "conv1")
    assert "along the batch or channel axis" in why or "not understood" in why, (name, why)
    assert [d.A for d in g.dfcs] == [["conv2"]]


@pytest.mark.parametrize("name", list(TUPLE_OPS_ALONG_SPACE))
def test_tuple_ops_along_space_stay_channelwise_and_exact(name):
    net = OpNet(TUPLE_OPS_ALONG_SPACE[name]).eval()
    g = discover(net, (1, 3, 8, 8))
    assert [d.A for d in g.dfcs] == [["conv1"], ["conv2"]], g.table()
    assert g.dfcs[0].D == ["bn1"] and g.dfcs[0].B == ["conv2"]
    assert_every_dfc_exact(net, g, (2, 3, 8, 8), name)


def test_unbind_along_space_is_followed_into_a_linear_layer():
    class Unbind(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv1(x)).mean(2).unbind(2)[5])    # (N, C, W) -> (N, C)

    net = Unbind().eval()
    g = discover(net, (1, 3, 8, 8))
    assert [(d.A, d.B) for d in g.dfcs] == [(["conv1"], ["fc"])]
    assert_every_dfc_exact(net, g, (2, 3, 8, 8), "unbind(2)")


def test_tuple_result_used_whole_is_refused():
    g = discover(OpNet(lambda y: torch.cat(y.chunk(2, 2), 2)), (1, 3, 8, 8))
    assert "uses a tuple of tensors whole" in refusal(g, "conv1")


# Channel-count-keeping ops that still work across channels (the count check cannot catch them)
ACROSS_CHANNELS_4D = {
    "pad_shift": lambda y: nn.functional.pad(y, (0, 0, 0, 0, 1, -1)),
    "pad_shift_keyword": lambda y: nn.functional.pad(y, pad=(1, 1, 0, 0, -1, 1)),
}
ACROSS_CHANNELS_3D = {
    "max_pool2d_function": lambda z: nn.functional.max_pool2d(z, (3, 1), 1, (1, 0)),
    "avg_pool2d_module": nn.AvgPool2d((3, 1), 1, (1, 0)),
    "zero_pad2d_module_shift": nn.ZeroPad2d((0, 0, 1, -1)),
    "pad_shift_3d": lambda z: nn.functional.pad(z, (0, 0, 1, -1)),
}


@pytest.mark.parametrize("name", list(ACROSS_CHANNELS_4D) + list(ACROSS_CHANNELS_3D))
def test_channel_shift_and_pool_across_channels_are_refused(name):
    net = OpNet(ACROSS_CHANNELS_4D[name]) if name in ACROSS_CHANNELS_4D else OpNet3D(ACROSS_CHANNELS_3D[name])
    g = discover(net, (1, 3, 8, 8))
    why = refusal(g, "conv1")
    assert ("padding along the batch or channel axis" in why or "across dim 1, the channels" in why), (name, why)


def test_spatial_padding_and_pools_stay_channelwise_and_exact():
    for op in (lambda y: nn.functional.pad(y, (1, 2, 0, 1)), lambda y: nn.functional.pad(y, (1, 1, 1, 1, 0, 0)),
               lambda y: nn.functional.max_pool2d(nn.functional.pad(y, (1, 1, 1, 1), value=-1.0), 3, 1)):
        net = OpNet(op).eval()
        g = discover(net, (1, 3, 8, 8))
        assert [d.A for d in g.dfcs] == [["conv1"], ["conv2"]], g.table()
        assert_every_dfc_exact(net, g, (2, 3, 8, 8), "spatial pad")
    net = OpNet3D(lambda z: nn.functional.pad(z, (2, 1))).eval()      # 3-D: pads width only
    g = discover(net, (1, 3, 8, 8))
    assert [d.A for d in g.dfcs] == [["conv1"]]
    assert_every_dfc_exact(net, g, (2, 3, 8, 8), "3-D width pad")


def test_conv_subclass_named_in_leaf_modules_stays_whole():
    for leaves in (["conv2"], [MyConv]):
        g = discover(Chain(MyConv(8, 6, 3, padding=1)), (1, 3, 8, 8), leaf_modules=leaves)
        for module, role in (("conv1", "A"), ("fc", "B")):
            assert "module conv2 (MyConv) is named in leaf_modules: kept whole" in refusal(g, module, role)
    g = discover(Chain(MyConv(8, 6, 3, padding=1)), (1, 3, 8, 8))     # traced into: F.conv2d on its weight
    assert "function conv2d at node 'conv2d' is not understood" in refusal(g, "conv1")


@pytest.mark.filterwarnings("ignore::FutureWarning")          # the old nn.utils.weight_norm is deprecated
@pytest.mark.parametrize("wrap", ["weight_norm", "spectral_norm", "old_weight_norm", "old_spectral_norm"])
def test_parametrised_convs_are_refused_and_not_pruned(wrap):
    from torch.nn.utils import parametrizations
    from pruning_lib.surgery import PruningError, prune
    fn = {"weight_norm": parametrizations.weight_norm, "spectral_norm": parametrizations.spectral_norm,
          "old_weight_norm": nn.utils.weight_norm, "old_spectral_norm": nn.utils.spectral_norm}[wrap]
    net = Chain(fn(nn.Conv2d(8, 6, 3, padding=1))).eval()
    g = discover(net, (1, 3, 8, 8))
    for module, role in (("conv1", "A"), ("fc", "B")):
        why = refusal(g, module, role)
        assert "module conv2" in why and ("parametrised" in why or "computes its weight in a hook" in why), why
    assert g.dfcs == []
    d = g.unprunable[[x.A for x in g.unprunable].index(["conv1"])]
    with pytest.raises(PruningError, match="not prunable: module conv2"):
        prune(net, g, {d: [0]})


def test_batchnorm_without_affine_or_running_stats_is_pruned_exactly():
    net = Chain(affine=False, track_running_stats=False).eval()
    g = discover(net, (1, 3, 8, 8))
    assert [d.A for d in g.dfcs] == [["conv1"], ["conv2"]]
    assert_every_dfc_exact(net, g, (4, 3, 8, 8), "BN(affine=False, track_running_stats=False)")


def test_keyword_cat_and_batchnorm_are_followed():
    net = Chain(keywords=True).eval()
    g = discover(net, (1, 3, 8, 8))
    assert [(d.A, d.D) for d in g.dfcs] == [(["conv1"], ["bn1"]), (["conv2"], ["bn2", "bn2"])]
    assert g.dfcs[0].bn_after == {"conv1": "bn1"}
    assert [(r.module, r.offset) for r in g.dfcs[1].dependent + g.dfcs[1].feed_out] == [
        ("bn2", 0), ("bn2", 6), ("fc", 0), ("fc", 6)]
    assert_every_dfc_exact(net, g, (2, 3, 8, 8), "keyword calls")


def test_tied_weights_are_refused_not_untied():
    g = discover(Tied(), (1, 3, 8, 8))
    assert "module conv2: conv2.weight is tied to conv3.weight" in refusal(g, "conv1")
    assert "module conv3: conv3.weight is tied to conv2.weight" in refusal(g, "fc", "B")
    assert g.dfcs == []


def test_grouped_convolutions_prune_by_whole_groups_exactly():
    """A grouped conv's group j reads input group j only: its input and output channels are one DFC
    whose channel is a whole group (graph.grouped), exact in float64 alone and all together."""
    net = GroupedNet().eval()
    g = discover(net, (1, 3, 8, 8))
    assert g.dfcs == [] and len(g.grouped) == 4
    blocks = {d.A[0]: {r.module + "/" + r.role: r.block for r in d.feed_in + d.dependent + d.feed_out}
              for d in g.grouped}
    assert blocks["c1"] == {"c1/feed_in": 2, "bn1/dependent": 2, "g/grouped_in": 2, "g/dependent": 3,
                            "bn2/dependent": 3, "c3/feed_out": 3}
    stream = next(d for d in g.grouped if "stem" in d.A)
    assert stream.channels == 8 and {r.module: r.block for r in stream.dependent if r.role == "grouped_in"} == {
        "mult": 2, "g2": 4}                 # 16 stream channels in 8 units: each one g2 group (4 of mult's 32)
    for d in g.grouped:
        assert_exact_prune(net, g, {d.index: list(range(0, d.channels, 2))}, (2, 3, 8, 8), what="grouped")
    pruned = assert_exact_prune(net, g, {d.index: [d.channels - 1] for d in g.grouped}, (2, 3, 8, 8), what="all")
    assert (pruned.g.groups, pruned.g.in_channels, pruned.g.out_channels) == (3, 6, 9)
    assert (pruned.g2.groups, pruned.mult.groups, pruned.mult.out_channels) == (7, 14, 28)


def test_grouped_conv_straddling_a_concatenation_is_refused():
    g = discover(GroupedNet(straddle=True), (1, 3, 8, 8))
    for module in ("a", "b"):
        assert "grouped convolution g3 (groups=4): its groups of 2 channels straddle concatenated inputs" in \
            refusal(g, module)


def test_torchvision_resnext_and_regnet_prune_by_groups():
    """The streams stay as they were (the grouped convs sit inside the blocks); each block's middle
    is a DFC of whole groups (ResNeXt: 32 groups of a stage's width; RegNet: groups of 16)."""
    from torchvision.models import regnet_x_400mf, resnext50_32x4d
    g = discover(resnext50_32x4d(), (1, 3, 64, 64))
    assert (len(g.dfcs), g.num_coupled, g.num_channels) == (5, 5, 3904)       # as before this change
    assert len(g.grouped) == 16 and {d.channels for d in g.grouped} == {32}
    assert {r for d in g.unprunable for r in d.reasons} == {
        "network input channels", "network output"}
    mid = next(d for d in g.grouped if d.A == ["layer1.0.conv1"])
    assert [r.block for r in mid.feed_in] == [4] and mid.B == ["layer1.0.conv3"]
    regnet = regnet_x_400mf().eval()
    gr = discover(regnet, (1, 3, 64, 64))
    assert (len(gr.dfcs), gr.num_channels, len(gr.grouped)) == (5, 688, 22)
    assert {d.feed_in[0].block for d in gr.grouped} == {16}
    d = max(gr.grouped, key=lambda d: d.channels)
    assert_exact_prune(regnet, gr, {d.index: [0, 3, d.channels - 1]}, (1, 3, 32, 32), what="regnet")

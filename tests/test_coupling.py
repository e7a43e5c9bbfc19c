"""Coupled-channel discovery: the counts DFPC reports, hand-written models, and refusals."""
import functools

import pytest
import torch
from torch import nn

from pruning_lib.coupling import FEED_OUT, UntraceableModelError, discover
from pruning_lib.models import get_model
from toy_models import BranchNet, CatNet, ChannelPad, DataDependent, SharedBN, ShuffleNet

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
    g = discover(get_model("resnet20"))
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
    g = discover(model("cifar_resnet101"))
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
    discover(m)
    assert m.training and all(m.training for m in m.modules())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_feed_out_roles_cover_every_reader():
    g = discover(get_model("resnet56"))
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
    assert "changes the channel dimension (4 -> 8)" in reasons


@pytest.mark.parametrize("name,shape", [("resnet20", (1, 3, 32, 32)), ("torchvision/mobilenet_v2", (1, 3, 32, 32)),
                                        ("torchvision/densenet121", (1, 3, 32, 32)), ("catnet", (1, 3, 8, 8)),
                                        ("branchnet", (1, 3, 8, 8))])
def test_meta_shape_propagation_matches_real_tensors(name, shape, monkeypatch):
    """Shapes come from a run on the meta device; the real-tensor fallback must give the same graph."""
    from pruning_lib import coupling
    from toy_models import TOYS
    net = TOYS[name]() if name in TOYS else model(name)
    fast = discover(net, shape)

    real_runs = []
    run = coupling._Shapes.run

    def meta_fails(self, *args, **kwargs):
        if self.meta:
            raise NotImplementedError("forced fallback")
        real_runs.append(1)
        return run(self, *args, **kwargs)
    monkeypatch.setattr(coupling._Shapes, "run", meta_fails)
    slow = discover(net, shape)
    assert real_runs == [1]
    assert fast.shapes == slow.shapes
    assert fast.table() == slow.table()
    assert [d.feed_out for d in fast.dfcs] == [d.feed_out for d in slow.dfcs]


def test_picture_and_table_of_dfcs():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pruning_lib.viz import dfc_frame, plot_dfcs
    net = model("resnet56")
    g = discover(net)
    ax = plot_dfcs(net, g)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [lab.split(":")[0] for lab in labels[:3]] == [f"#{d.index}" for d in g.dfcs if d.coupled]
    rows = [t.get_text() for t in ax.texts if t.get_text().startswith("layers.") or t.get_text() in ("conv1", "fc")]
    assert len(rows) == 58                     # stem, 54 block convs, 2 shortcuts and the fc, one row each
    plt.close(ax.figure)
    frame = dfc_frame(g)
    assert len(frame) == 32 and frame["coupled"].sum() == 3 and frame.loc[0, "channels"] == 16
    assert g.table().count("\n") == 33 and "unprunable: network output" in g.table()

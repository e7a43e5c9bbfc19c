"""Class-conditional channel statistics: correct moments, copies not views, eval mode, per_class."""
import pytest
import torch
from torch import nn

from pruning_lib.course import data as cdata
from pruning_lib.scoring.class_statistics import ClassStatistics, collect_statistics, default_modules, filter_scores

K = 10


class Toy(nn.Module):
    """conv(1x1) -> BN -> in-place ReLU -> dropout -> mean -> linear. Output channel 0 reads input
    channel 0, whose level depends on the class; channels 1-3 read class-independent noise."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, K)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0.5, 0.5]])[:, :, None, None])
            self.conv.bias.copy_(torch.tensor([0.0, -0.2, 0.1, 0.0]))
            self.bn.running_mean.copy_(torch.tensor([0.1, 0.0, 0.0, 0.2]))
            self.bn.running_var.copy_(torch.tensor([1.5, 1.0, 2.0, 0.5]))
            self.bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0]))
            self.bn.bias.copy_(torch.tensor([-0.3, 0.0, 0.2, -1.0]))

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(x.mean((2, 3))))


def _split(per_class: int = 23, seed: int = 0, size: int = 8) -> cdata.CIFAR10Split:
    """Images whose red level is 20 + 20 * class (+ noise); green and blue are pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(per_class)
    y = y[torch.randperm(len(y), generator=g)]                     # classes interleaved in batches
    x = torch.randint(0, 256, (len(y), 3, size, size), generator=g).float()
    x[:, 0] = 20 + 20 * y[:, None, None].float() + 15 * torch.randn(len(y), size, size, generator=g)
    return cdata.CIFAR10Split("toy", x.clamp(0, 255).to(torch.uint8), y, "synthetic")


@torch.no_grad()
def _direct(model: Toy, split, flatten: bool = False):
    model.eval()
    out = model.bn(model.conv(cdata.normalize(split.x))).double()           # (N, C, H, W)
    if flatten:
        feats = out.flatten(2).transpose(1, 2).reshape(-1, out.shape[1])
        y = split.y.repeat_interleave(out.shape[2] * out.shape[3])
    else:
        feats, y = out.mean((2, 3)), split.y
    means = torch.stack([feats[y == c].mean(0) for c in range(K)])
    vars = torch.stack([feats[y == c].var(0) for c in range(K)])
    return means, vars, torch.bincount(y, minlength=K)


@pytest.mark.parametrize("summary", ["spatial_mean", "spatial_flatten"])
def test_moments_match_direct_computation(summary):
    model, split = Toy(), _split()
    stats = collect_statistics(model, split, batch_size=37, summary=summary)   # 37 splits classes across batches
    assert isinstance(stats, ClassStatistics) and list(stats.modules) == ["bn"]
    means, vars, counts = stats["bn"]
    want_m, want_v, want_n = _direct(model, split, flatten=summary == "spatial_flatten")
    assert means.shape == vars.shape == (K, 4) and counts.shape == (K,)
    assert torch.equal(counts, want_n)
    assert torch.allclose(means, want_m, atol=1e-9)
    assert torch.allclose(vars, want_v, rtol=1e-7, atol=1e-9)
    # the class-dependent channel 0 moves with the class; the noise channels do not
    assert (means[1:, 0] > means[:-1, 0]).all()


def test_inplace_relu_does_not_corrupt_captured_outputs():
    model, split = Toy(), _split()
    stats = collect_statistics(model, split, modules=["bn", "relu"], batch_size=50)
    want_m, _, _ = _direct(model, split)
    # the BN output has negative channel means; an in-place ReLU on a stored view would clip them to >= 0
    assert (stats["bn"].means < 0).any()
    assert torch.allclose(stats["bn"].means, want_m, atol=1e-9)
    assert (stats["relu"].means >= 0).all()          # the ReLU's own output is, of course, clipped
    assert not torch.allclose(stats["relu"].means, stats["bn"].means)


def test_eval_mode_used_and_every_mode_restored():
    model, split = Toy(), _split(per_class=10)
    model.train()
    model.drop.eval()                                # a mixed state must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = collect_statistics(model, split)
    b = collect_statistics(model, split)
    # train-mode BN would use batch statistics and update the running ones; dropout would add noise
    assert torch.equal(a["bn"].means, b["bn"].means)
    assert torch.allclose(a["bn"].means, _direct(Toy(), split)[0], atol=1e-9)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training and model.bn.training and model.conv.training and not model.drop.training
    assert all(not m._forward_hooks for m in model.modules())


def test_per_class_respected():
    model, split = Toy(), _split(per_class=23)
    stats = collect_statistics(model, split, per_class=7, seed=3)
    assert stats.images == 7 * K and stats.per_class == {c: 7 for c in range(K)}
    assert torch.equal(stats["bn"].counts, torch.full((K,), 7))
    flat = collect_statistics(model, split, per_class=7, seed=3, summary="spatial_flatten")
    assert torch.equal(flat["bn"].counts, torch.full((K,), 7 * 64))
    with pytest.raises(ValueError, match="per_class"):
        collect_statistics(model, split, per_class=24)


def test_filter_scores_find_the_discriminative_channel():
    stats = collect_statistics(Toy(), _split(per_class=40))
    for distance in ("hellinger_lb", "tv_exact", "mean_gap", "hellinger"):
        scores = filter_scores(stats, distance)
        s = scores["bn"]
        assert s.shape == (4,) and (s >= 0).all()
        assert s.argmax().item() == 0, (distance, s)       # only channel 0 separates every class pair
    lb, tv = filter_scores(stats, "hellinger_lb")["bn"], filter_scores(stats, "tv_exact")["bn"]
    assert (lb <= tv + 1e-12).all()                       # H^2 is a lower bound on TV
    with pytest.raises(ValueError, match="unknown distance"):
        filter_scores(stats, "kl")


def test_resnet_default_modules_and_errors():
    from pruning_lib.course.models import get_model
    model = get_model("resnet20")
    names = default_modules(model)
    assert len(names) == 21 and "bn1" in names and "layers.2.2.bn2" in names
    stats = collect_statistics(model, _split(per_class=3, size=32), batch_size=15)
    assert stats["layers.2.2.bn2"].means.shape == (K, 64)
    with pytest.raises(ValueError, match="not in the model"):
        collect_statistics(model, _split(per_class=3), modules=["layers.9.bn"])
    with pytest.raises(ValueError, match="summary"):
        collect_statistics(model, _split(per_class=3), summary="max")

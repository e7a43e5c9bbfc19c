"""Images synthesised from a network's BatchNorm statistics (pruning_lib.repair.synthesis): the loss
falls, the caller's model is untouched, the cache is reused when identical and refused otherwise."""
from __future__ import annotations

import copy

import pytest
import torch

from pruning_lib.pruning import bn_recalibrate
from pruning_lib.repair import SynthesisCacheError, bn_statistics_loss, model_fingerprint, synthesize_images
from test_repair import TinyRes
from toy_models import randomised

KW = dict(n=6, shape=(3, 8, 8), iterations=60, batch_size=4, lr=0.2, progress=False)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return randomised(TinyRes(), seed=3).float()


def test_synthesis_lowers_the_bn_statistics_loss_and_leaves_the_model_alone(net):
    model = copy.deepcopy(net).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    res = synthesize_images(model, **KW)
    assert res.images.shape == (6, 3, 8, 8) and res.images.dtype == torch.float32 and not res.from_cache
    assert res.bn_loss_end < 0.8 * res.bn_loss_start
    with torch.no_grad():
        frozen = copy.deepcopy(net).eval()
        end = (4 * float(bn_statistics_loss(frozen, res.images[:4])) + 2 * float(bn_statistics_loss(frozen, res.images[4:]))) / 6
    assert res.bn_loss_end == pytest.approx(end, rel=1e-5)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    # unlabelled images, paired with the model's own prediction: the (inputs, labels) form the library reads
    x, y = next(iter(res.loader(batch_size=4)))
    assert x.shape == (4, 3, 8, 8) and torch.equal(y, frozen(res.images[:4]).argmax(1))
    bn_recalibrate(net, data=res.loader(batch_size=3))


def test_synthesis_cache_is_reused_when_identical_and_refused_otherwise(net, tmp_path):
    path = tmp_path / "synth.pt"
    first = synthesize_images(net, cache=path, **KW)
    assert path.exists() and not first.from_cache
    again = synthesize_images(net, cache=path, **KW)
    assert again.from_cache and torch.equal(again.images, first.images) and torch.equal(again.predicted, first.predicted)
    assert again.fingerprint == model_fingerprint(net) and again.bn_loss_end == first.bn_loss_end
    with pytest.raises(SynthesisCacheError, match="iterations: cached 60, asked 30"):
        synthesize_images(net, cache=path, **dict(KW, iterations=30))
    other = copy.deepcopy(net)
    with torch.no_grad():
        other.conv_a.weight[0, 0, 0, 0] += 1e-3
    assert model_fingerprint(other) != model_fingerprint(net)
    with pytest.raises(SynthesisCacheError, match="another model"):
        synthesize_images(other, cache=path, **KW)
    path.write_bytes(b"not a cache")
    with pytest.raises(SynthesisCacheError, match="not a readable synthesis cache"):
        synthesize_images(net, cache=path, **KW)


def test_synthesis_is_seeded(net):
    a = synthesize_images(net, **dict(KW, iterations=3))
    b = synthesize_images(net, **dict(KW, iterations=3))
    c = synthesize_images(net, **dict(KW, iterations=3, seed=1))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_synthesis_refuses_bad_settings(net):
    with pytest.raises(ValueError, match="iterations"):
        synthesize_images(net, **dict(KW, iterations=0))
    with pytest.raises(ValueError, match="no BatchNorm"):
        synthesize_images(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)), **KW)

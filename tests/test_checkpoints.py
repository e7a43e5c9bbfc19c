"""pruning_lib.course.checkpoints: round trips, half storage, architecture checks, pruned shapes."""
from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from pruning_lib.course.checkpoints import (FORMAT, CheckpointError, load_checkpoint, load_state,
                                     read_checkpoint, resize_to_state, save_checkpoint)
from pruning_lib.course.models import get_model


def _trained_looking(model: nn.Module) -> nn.Module:
    """Non-default BN statistics, so a round trip that dropped buffers would show."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.num_batches_tracked.fill_(7)
    return model.eval()


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip(tmp_path):
    model = _trained_looking(get_model("resnet20"))
    path = save_checkpoint(tmp_path / "sub" / "r20.pt", model, "resnet20", meta={"test_accuracy": 91.5})
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    _assert_same_state(model, loaded)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["test_accuracy"] == 91.5 and meta["arch"] == "resnet20" and meta["pruned"] is False
    assert meta["versions"]["torch"] == torch.__version__
    assert load_checkpoint(path, arch="resnet20")[1]["arch"] == "resnet20"


def test_plain_torch_load_weights_only(tmp_path):
    model = get_model("resnet20")
    path = save_checkpoint(tmp_path / "r20.pt", model, "resnet20", meta={"note": "x"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["arch"] == "resnet20" and raw["num_classes"] == 10
    assert raw["meta"]["note"] == "x" and raw["pruned"] is False and raw["half"] is False
    fresh = get_model("resnet20")
    fresh.load_state_dict(raw["state_dict"])            # a plain state_dict, no course code needed
    _assert_same_state(model, fresh)


def test_half_storage_restores_float32(tmp_path):
    model = _trained_looking(get_model("resnet20"))
    path = save_checkpoint(tmp_path / "h.pt", model, "resnet20", half=True)
    raw = read_checkpoint(path)
    assert raw["half"] and raw["state_dict"]["conv1.weight"].dtype == torch.float16
    assert raw["state_dict"]["bn1.num_batches_tracked"].dtype == torch.int64      # ints untouched
    loaded, _ = load_checkpoint(path)
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == v.dtype, k
        expected = v.half().to(v.dtype) if v.is_floating_point() else v
        assert torch.equal(got, expected), k
    assert path.stat().st_size < 0.6 * save_checkpoint(tmp_path / "f.pt", model, "resnet20").stat().st_size


def test_num_classes_recorded(tmp_path):
    path = save_checkpoint(tmp_path / "c100.pt", get_model("resnet20", num_classes=100), "resnet20")
    loaded, _ = load_checkpoint(path)
    assert loaded.fc.out_features == 100


def test_wrong_architecture_by_name(tmp_path):
    path = save_checkpoint(tmp_path / "r20.pt", get_model("resnet20"), "resnet20")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, arch="resnet56")
    assert "'resnet20'" in str(err.value) and "'resnet56'" in str(err.value)


def test_wrong_architecture_by_state(tmp_path):
    state = get_model("resnet20").state_dict()
    with pytest.raises(CheckpointError) as err:       # other keys (deeper network)
        load_state(get_model("resnet56"), state, "resnet56", source="resnet20.pt")
    msg = str(err.value)
    assert "resnet20.pt" in msg and "'resnet56'" in msg and "unexpected" in msg and "missing" in msg
    with pytest.raises(CheckpointError, match=r"fc.weight is \(100, 64\).*\(10, 64\)"):  # same keys
        load_state(get_model("resnet20"), get_model("resnet20", num_classes=100).state_dict(), "resnet20")


def test_not_a_course_checkpoint(tmp_path):
    torch.save(get_model("resnet20").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a pruning-course checkpoint"):
        read_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "absent.pt")


def test_resize_to_state_on_a_small_network():
    def net(c, f):
        return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                             nn.Conv2d(c, f, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(f, 5))
    small = _trained_looking(net(6, 4))
    state = small.state_dict()
    big = net(16, 8)
    with pytest.raises(CheckpointError, match="pruned=True"):
        load_state(big, state, "toy")
    load_state(big, state, "toy", pruned=True)
    assert big[0].out_channels == 6 and big[0].weight.shape == (6, 3, 3, 3) and big[0].bias.shape == (6,)
    assert big[1].num_features == 6 and big[1].running_var.shape == (6,)
    assert big[3].in_channels == 6 and big[3].out_channels == 4 and big[3].bias is None
    assert big[6].in_features == 4 and big[6].weight.shape == (5, 4)
    _assert_same_state(small, big.eval())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(small(x), big(x))


def test_resize_keeps_depthwise_convs_depthwise():
    conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8))
    state = nn.Sequential(nn.Conv2d(5, 5, 3, padding=1, groups=5)).state_dict()
    resize_to_state(conv, state)
    assert conv[0].groups == 5 and conv[0].in_channels == 5 and conv[0].out_channels == 5


def _prune_block_inner(model: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A consistently pruned resnet20: the inner channels of the first block (conv1 out, bn1,
    conv2 in) reduced to ``keep``; the residual stream is untouched."""
    block = model.layers[0][0]
    c1 = nn.Conv2d(16, len(keep), 3, 1, 1, bias=False)
    c1.weight.data = block.conv1.weight.data[keep].clone()
    bn = nn.BatchNorm2d(len(keep))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).data = getattr(block.bn1, name).data[keep].clone()
    c2 = nn.Conv2d(len(keep), 16, 3, 1, 1, bias=False)
    c2.weight.data = block.conv2.weight.data[:, keep].clone()
    block.conv1, block.bn1, block.conv2 = c1, bn, c2
    return model


def test_pruned_checkpoint_round_trip(tmp_path):
    model = _prune_block_inner(_trained_looking(get_model("resnet20")), torch.tensor([0, 3, 5, 9, 12]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
    path = save_checkpoint(tmp_path / "pruned.pt", model, "resnet20", pruned=True, half=True)
    loaded, meta = load_checkpoint(path, arch="resnet20")
    assert meta["pruned"] is True
    block = loaded.layers[0][0]
    assert block.conv1.weight.shape == (5, 16, 3, 3) and block.bn1.num_features == 5
    assert block.conv2.weight.shape == (16, 5, 3, 3)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=0.05, rtol=0.05)     # float16 storage
    unmarked = save_checkpoint(tmp_path / "unmarked.pt", model, "resnet20")
    with pytest.raises(CheckpointError, match="pruned=True"):
        load_checkpoint(unmarked)


def test_checkpoint_metadata_is_plain_and_legacy_torchversion_loads(tmp_path):
    path = save_checkpoint(tmp_path / "r20.pt", get_model("resnet20"), "resnet20")
    versions = torch.load(path, weights_only=True)["meta"]["versions"]
    assert type(versions["torch"]) is str and versions["torch"] == str(torch.__version__)
    # Checkpoints saved before the fix stored torch.__version__ itself (a TorchVersion): still readable.
    raw = torch.load(path, weights_only=True)
    raw["meta"]["versions"]["torch"] = torch.__version__
    torch.save(raw, tmp_path / "legacy.pt")
    with pytest.raises(pickle.UnpicklingError):              # what the fix avoids for new files
        torch.load(tmp_path / "legacy.pt", weights_only=True)
    model, meta = load_checkpoint(tmp_path / "legacy.pt")
    assert meta["versions"]["torch"] == torch.__version__


# --------------------------------------------------------------------------- the shipped checkpoints

SHIPPED = ("resnet20", "resnet56", "cifar_resnet18", "cifar_resnet50")
HALF = ("cifar_resnet18", "cifar_resnet50")                  # over 5 M parameters: stored in float16


@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_checkpoint_metadata_and_training_script_agree(arch):
    """Each shipped file loads weights-only, names its data copy and test accuracy, stays small, and
    scripts/train_checkpoints.sh retrains it with the recipe recorded in its metadata."""
    import re
    import shlex
    from pathlib import Path

    from pruning_lib.course.data import default_data_dir
    from pruning_lib.course.training import _parser, config_from_args, retrain_command
    path = default_data_dir() / "checkpoints" / f"{arch}.pt"
    assert path.stat().st_size < 50_000_000, f"{path} is over 50 MB: store it in half precision"
    ckpt = read_checkpoint(path)
    meta = ckpt["meta"]
    assert ckpt["arch"] == arch and not ckpt["pruned"] and ckpt["half"] == (arch in HALF)
    assert meta["data_copy"] in ("jpeg", "official") and meta["train_images"] == 46_000
    assert 80.0 <= meta["test_accuracy"] <= 100.0 and meta["epochs"] == meta["recipe"]["epochs"]
    script = (Path(__file__).parent.parent / "scripts" / "train_checkpoints.sh").read_text()
    recipes = dict(re.findall(r'\[(\w+)\]="([^"]+)"', script))
    assert arch in recipes, f"scripts/train_checkpoints.sh has no recipe for {arch}"
    argv = shlex.split(f"--arch {arch} {recipes[arch]} --seed 0 --out x.pt")
    script_cfg = config_from_args(_parser().parse_args(argv))
    recorded = shlex.split(retrain_command(meta["recipe"], "x.pt"))[3:]
    assert script_cfg == config_from_args(_parser().parse_args(recorded)), (
        f"scripts/train_checkpoints.sh trains {arch} with {recipes[arch]!r}, but the shipped file was "
        f"trained with {' '.join(recorded)}: update the script")


def test_sharded_checkpoint_round_trips_and_each_shard_is_small(tmp_path):
    model = _trained_looking(get_model("cifar_resnet18"))
    path = save_checkpoint(tmp_path / "r18.pt", model, "cifar_resnet18", meta={"test_accuracy": 91.0},
                           half=True, shard_mb=6)
    shards = sorted(tmp_path.glob("r18.pt.shard-*.pt"))
    assert len(shards) >= 4 and all(f.stat().st_size <= 6e6 for f in shards)
    assert path.stat().st_size < 100_000                      # the index holds no weights
    assert not list(tmp_path.glob("*.tmp"))
    loaded, meta = load_checkpoint(path, arch="cifar_resnet18")
    assert meta["test_accuracy"] == 91.0
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.shape == v.shape and (torch.allclose(w, v.half().float()) if v.is_floating_point()
                                       else torch.equal(w, v)), k


def test_a_missing_altered_or_foreign_shard_is_refused(tmp_path):
    model = _trained_looking(get_model("resnet20"))
    path = save_checkpoint(tmp_path / "a" / "r20.pt", model, "resnet20", shard_mb=0.3)
    first = path.with_name("r20.pt.shard-01-of-" + sorted(path.parent.glob("*.shard-*"))[0].name.split("-of-")[1])
    data = first.read_bytes()
    first.write_bytes(data[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_checkpoint(path)
    first.unlink()
    with pytest.raises(CheckpointError, match="shard .* is missing"):
        load_checkpoint(path)
    other = save_checkpoint(tmp_path / "b" / "r20.pt", _trained_looking(get_model("resnet20")), "resnet20",
                            shard_mb=0.3)
    first.write_bytes(other.with_name(first.name).read_bytes())   # a shard of another save, same name
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="shard_mb"):
        save_checkpoint(tmp_path / "c.pt", model, "resnet20", shard_mb=60)
    with pytest.raises(ValueError, match="alone takes"):
        save_checkpoint(tmp_path / "d.pt", model, "resnet20", shard_mb=0.01)


def test_a_truncated_checkpoint_names_the_file_and_the_fix(tmp_path):
    path = save_checkpoint(tmp_path / "r20.pt", get_model("resnet20"), "resnet20")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="r20.pt cannot be read.*truncated") as e:
        load_checkpoint(path)
    assert "weights_only=False" not in str(e.value)

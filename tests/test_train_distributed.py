"""``torchrun --nproc-per-node 2 -m pruning_lib.train`` on 2 CPU processes (gloo), on a small learnable
synthetic CIFAR: the run completes and records how it ran, 2 processes x 64 images follow the
trajectory of 1 process x 128, and a resume file continues on another number of processes.

Every run is the paper recipe on 130 images (1 global batch of 128 per epoch), 2 epochs, no
augmentation, in float64 (``--float64``): float32 rounding, which differs with the batch split, is
amplified by orders of magnitude in ResNet-20's backward pass at initialisation (a 1e-6 relative
change of the input moves the first layers' gradients by about 1e-3 relative), so only float64 runs
can be held to a tight tolerance. The in-process runs are the single-process reference."""
from __future__ import annotations

import re
import os
import pickle
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_images
from pruning_lib.course import data as cdata
from pruning_lib.course import training as ptrain
from pruning_lib.course.checkpoints import load_checkpoint

pytestmark = pytest.mark.slow          # 2-process torchrun runs: minutes (make test-slow)

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 300          # a launch that has not ended by then is hung: fail instead of waiting


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder holding the official python-batches layout (what a subprocess reads with the
    default splits: 200 + 200 images per class held out as dist/val), 413 coloured images per class:
    the ``train`` split is 130 images."""
    root = tmp_path_factory.mktemp("ddp_data")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    x, y = make_images(413, "colour", seed=1)
    x = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    for i, part in enumerate(np.array_split(np.arange(len(y)), 5), 1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({"data": x[part], "labels": y[part].tolist()}))
    tx, ty = make_images(20, "colour", seed=2)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": tx.transpose(0, 3, 1, 2).reshape(len(tx), -1),
                                                      "labels": ty.tolist()}))
    cdata.prepare(root)
    assert len(cdata.load_split("train", root)) == 130
    return root


def _args(data: Path) -> list[str]:
    return ["--recipe", "paper", "--arch", "resnet20", "--epochs", "2", "--batch-size", "128", "--lr", "0.05",
            "--train-subset", "130", "--no-amp", "--no-augment", "--float64", "--device", "cpu", "--data-dir", str(data)]


def _config(data: Path) -> ptrain.TrainConfig:
    """The config the command line above asks for (what every process builds)."""
    return ptrain.config_from_args(ptrain._parser().parse_args(_args(data) + ["--out", "x.pt"]))


def torchrun(*args, nproc: int = 2, module: str | None = "pruning_lib.train") -> subprocess.Popen:
    """Start ``torchrun --standalone --nproc-per-node <nproc> [-m <module>] <args>``, 1 thread per
    process; :func:`_finish` waits for it. Started in the background, so a launch's start-up (two
    interpreters importing torch) overlaps the single-process run the test does meanwhile."""
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = launcher + ["--standalone", "--nproc-per-node", str(nproc)] + (["-m", module] if module else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.Popen(cmd + [str(a) for a in args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(launch: subprocess.Popen) -> tuple[int, str, str]:
    """Wait for ``launch`` (killing it if it outlives :data:`HANG_GUARD_S`): exit status, stdout, stderr."""
    try:
        out, err = launch.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        launch.kill()
        out, err = launch.communicate()
        pytest.fail(f"the torchrun launch hung for {HANG_GUARD_S} s:\n{out[-3000:]}\n{err[-3000:]}")
    return launch.returncode, out, err


def _ok(launch: subprocess.Popen) -> str:
    status, out, err = _finish(launch)
    assert status == 0, out[-4000:] + err[-4000:]
    return out


def _assert_close(a: dict, b: dict, what: str, rtol: float = 1e-7, atol: float = 1e-9) -> None:
    """Same keys; floats equal up to float64 rounding of different reduction orders (amplified);
    float32 checkpoints of float64 runs are compared with ``rtol=1e-6`` (one float32 rounding)."""
    assert set(a) == set(b), what
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k].double(), b[k].double(), rtol=rtol, atol=atol, msg=f"{what}: {k}")
        else:
            assert torch.equal(a[k], b[k]), f"{what}: {k}"


def test_two_processes_follow_one_and_resume_files_cross_world_sizes(data, tmp_path):
    """Step 1 on 1 process x 128 and on 2 processes x 64 gives the same state; then each resume
    file takes step 2 on the other process count, and both runs end at the same weights."""
    cfg = _config(data)
    assert cfg.name == "paper, modified: epochs, lr, augment" and not cfg.augment
    two = torchrun(*_args(data), "--out", tmp_path / "two.pt", "--budget-s", "0")      # runs meanwhile
    one = ptrain.train(cfg, tmp_path / "one.pt", device="cpu", data_dir=data, budget_s=0, float64=True)
    assert not one.finished and one.epochs == 1
    one_state = torch.load(one.checkpoint, weights_only=True)

    # 2 processes x 64, stopped after step 1: the same weights, momentum, loss and generator state.
    out = _ok(two)
    assert "2 processes (gloo), global batch 128 = 2 x 64 per process, lr 0.05 (for the global batch)" in out
    assert "BatchNorm over the global batch of 128" in out
    two_state = torch.load(tmp_path / "two.pt.resume.pt", weights_only=True)
    assert not (tmp_path / "two.pt").exists()
    assert two_state["epoch"] == 1 and two_state["config"] == one_state["config"]
    assert [h["world_size"] for h in two_state["history"]] == [2]
    assert two_state["history"][0]["loss"] == pytest.approx(one_state["history"][0]["loss"], rel=1e-6)
    assert two_state["model"]["conv1.weight"].dtype == torch.float64
    _assert_close(two_state["model"], one_state["model"], "weights after step 1")
    momentum = lambda s: {str(k): v["momentum_buffer"] for k, v in s["optimizer"]["state"].items()}  # noqa: E731
    _assert_close(momentum(two_state), momentum(one_state), "momentum after step 1")
    assert torch.equal(two_state["generator"], one_state["generator"])   # the same global batches drawn

    # 1 process -> 2: the single-process resume file takes step 2 under torchrun (started now) ...
    one_then_two = torchrun(*_args(data), "--out", tmp_path / "one.pt")
    # ... while the 2-process resume file takes step 2 in this process.
    two_then_one = ptrain.train(cfg, tmp_path / "two.pt", device="cpu", data_dir=data, float64=True)
    assert two_then_one.finished and [h["world_size"] for h in two_then_one.history] == [2, 1]
    assert not (tmp_path / "two.pt.resume.pt").exists()
    # The torchrun run's checkpoint loads and records the world size, recipe, global batch and lr,
    # and each epoch's machine.
    out = _ok(one_then_two)
    assert "resuming resnet20 from epoch 1/2" in out and "test accuracy" in out
    assert not one.checkpoint.exists()
    model, meta = load_checkpoint(tmp_path / "one.pt", arch="resnet20")
    other, other_meta = load_checkpoint(tmp_path / "two.pt", arch="resnet20")
    # Both orders end at the same weights (float32 checkpoints of float64 runs: one float32 rounding).
    _assert_close(model.state_dict(), other.state_dict(), "after step 2", rtol=1e-6, atol=1e-8)
    assert [h["loss"] for h in meta["history"]] == pytest.approx([h["loss"] for h in other_meta["history"]], rel=1e-6)
    assert meta["world_size"] == 2 and other_meta["world_size"] == 1
    assert meta["recipe"] == asdict(cfg) and meta["recipe"]["batch_size"] == 128 and meta["recipe"]["lr"] == 0.05
    d = meta["distributed"]
    assert (d["world_size"], d["backend"], d["global_batch"], d["per_process_batch"], d["lr"]) == (2, "gloo", 128, 64, 0.05)
    assert d["sync_batchnorm"] is True and "global batch" in d["batchnorm"]
    assert other_meta["distributed"]["world_size"] == 1 and other_meta["distributed"]["per_process_batch"] == 128
    assert [h["world_size"] for h in meta["history"]] == [1, 2] and all(h["float64"] for h in meta["history"])
    here = ptrain.hardware(torch.device("cpu"))
    # torchrun sets each process's OMP_NUM_THREADS itself, so the thread count of the 2-process epoch is its own
    first, second = (h["hardware"] for h in meta["history"])
    assert first == here
    assert re.fullmatch(rf"2 x {re.escape(here.rsplit(', ', 1)[0])}, \d+ threads", second), second
    assert meta["hardware"] == f"{here} (epoch 1); {second} (epoch 2)"
    assert meta["train_images"] == 130 and meta["epochs"] == 2
    assert meta["test_accuracy"] == ptrain.evaluate(model, cdata.load_split("test", data))


def test_an_error_on_one_rank_ends_the_whole_launch(data, tmp_path):
    """Rank 1 fails at its first step while rank 0 is inside the step's collectives: torchrun
    stops rank 0 too and reports the failure; nothing is written."""
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text("import os, sys\n"
                      "from pruning_lib.course import training\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    def fail(*args, **kwargs):\n"
                      "        raise RuntimeError('injected failure on rank 1')\n"
                      "    training.train_step = fail\n"
                      "training.main(sys.argv[1:])\n")
    status, out, err = _finish(torchrun(script, *_args(data), "--out", tmp_path / "f.pt", module=None))
    assert status != 0
    assert "injected failure on rank 1" in out + err
    assert not list(tmp_path.glob("f.pt*"))


def test_ranks_share_exactly_the_single_process_batches(data):
    """Each rank's share of every global batch, augmentation and Cutout included, is exactly the
    images one process trains on at those positions: together the ranks see the same global batch."""
    split = cdata.load_split("train", data)
    batch = 64
    single = list(ptrain.rank_batches(split, batch, torch.Generator().manual_seed(3), augment=True, cutout=8))
    assert len(single) == len(split) // batch
    for world in (2, 4):
        shares = [list(ptrain.rank_batches(split, batch, torch.Generator().manual_seed(3), augment=True,
                                           cutout=8, rank=r, world_size=world, epoch=5)) for r in range(world)]
        for k, (x, y) in enumerate(single):
            for r in range(world):
                assert torch.equal(shares[r][k][0], x[r::world]) and torch.equal(shares[r][k][1], y[r::world])
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        ptrain.rank_batches(split, batch, torch.Generator(), world_size=3)


def test_a_batch_that_does_not_split_among_the_processes_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit) as e:
        ptrain.main(["--batch-size", "128", "--out", str(tmp_path / "x.pt")])
    assert e.value.code == 2 and "must split evenly among the 3 processes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="multiple of 3"):
        ptrain.train(ptrain.TrainConfig(batch_size=128), tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())

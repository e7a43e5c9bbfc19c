"""scripts/gpu_paper_networks.py, the GPU machine's prepared command, dry-run on the CPU on tiny
settings: it trains within its budget (or stops resumably), ships shards no bigger than the device's
file limit, and writes the DFPC curve with a timed column for every step within the drop."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import make_images, write_image_folder
from pruning_lib.course import data as cdata
from pruning_lib.course.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_paper_networks  # noqa: E402

TINY = ["--archs", "resnet20", "--epochs", "2", "--train-subset", "320", "--device", "cpu", "--test-subset", "100",
        "--gpu-batch", "4", "--gpu-warmup", "1", "--gpu-repeats", "2", "--step-fraction", "0.3",
        "--methods", "DFPC (coupled)"]


@pytest.fixture
def colour_data_dir(tmp_path_factory, monkeypatch, small_splits):
    """A learnable synthetic CIFAR as the default data folder (10 x (80 train + 20 test) images)."""
    root = tmp_path_factory.mktemp("colour")
    write_image_folder(root / "cifar10", make_images(80, "colour", seed=1), make_images(20, "colour", seed=2))
    cdata.prepare(root)
    monkeypatch.setenv("PRUNING_COURSE_DATA", str(root))
    return root


def test_dry_run_trains_ships_and_times(tmp_path, colour_data_dir, monkeypatch):
    monkeypatch.setattr(gpu_paper_networks, "ensure_data", lambda d: None)   # the archive is not carried here
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    stopped = gpu_paper_networks.main(TINY + ["--out-dir", str(out), "--checkpoint-dir", str(ckpt),
                                              "--budget-s", "0"])
    assert stopped["trained"]["resnet20"]["finished"] is False and not stopped["experiments"]
    assert (ckpt / "resnet20.pt.resume.pt").exists() and not (out / "data" / "checkpoints").exists()

    done = gpu_paper_networks.main(TINY + ["--out-dir", str(out), "--checkpoint-dir", str(ckpt),
                                           "--budget-s", "600"])
    assert done["trained"]["resnet20"]["finished"] and done["experiments"]["resnet20"]["complete"]
    shipped = out / "data" / "checkpoints" / "paper"
    assert all(f.stat().st_size <= gpu_paper_networks.SHARD_MB * 1e6 for f in shipped.iterdir())
    model, meta = load_checkpoint(shipped / "resnet20.pt", arch="resnet20")
    assert done["trained"]["resnet20"]["processes"] == 1
    assert gpu_paper_networks.run_summary(ckpt / "resnet20.pt") == {
        "finished": True, "epochs": 2, "test_accuracy": done["trained"]["resnet20"]["test_accuracy"],
        "wall_time_s": done["trained"]["resnet20"]["wall_time_s"]}
    assert meta["recipe"]["name"] == "paper, modified: epochs" and meta["epochs"] == 2
    res = json.loads((out / "data" / "results" / "dfpc_paper_resnet20.json").read_text())
    rows = res["methods"]["DFPC (coupled)"]["steps"]
    assert rows[0]["gpu_speedup"] == 1.0 and len(rows) >= 2
    for r in rows[1:]:
        within = r["accuracy_drop"] is not None and r["accuracy_drop"] <= 10.0
        assert (r["gpu_speedup"] is not None) == within


def test_several_gpus_train_through_torchrun(tmp_path, colour_data_dir, monkeypatch):
    """With more than one GPU (here ``--nproc 4``, no GPU needed) training is one torchrun launch of
    ``pruning_lib.train`` with the recipe's own arguments; the launch is stood in for by running that
    command line in this process, so it is checked to train the intended recipe and stop resumably."""
    from pruning_lib.course import training as ptrain
    monkeypatch.setattr(gpu_paper_networks, "ensure_data", lambda d: None)
    launched = []

    def launch_here(cmd):
        launched.append(cmd)
        ptrain.main(cmd[cmd.index("pruning_lib.train") + 1:])      # what every process would run
        return 0

    monkeypatch.setattr(gpu_paper_networks, "launch", launch_here)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    stopped = gpu_paper_networks.main(TINY + ["--nproc", "4", "--out-dir", str(out), "--checkpoint-dir", str(ckpt),
                                              "--budget-s", "0"])
    [cmd] = launched
    assert cmd[:8] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
                       "-m", "pruning_lib.train"]
    a = ptrain._parser().parse_args(cmd[8:])
    assert ptrain.config_from_args(a) == ptrain.recipe_config("paper", arch="resnet20", epochs=2, train_subset=320)
    assert (a.out, a.device, a.budget_s, a.shard_mb) == (str(ckpt / "resnet20.pt"), "cpu", 0.0,
                                                         gpu_paper_networks.SHARD_MB)
    assert stopped["trained"]["resnet20"] == {"finished": False, "epochs": 1, "test_accuracy": None,
                                              "wall_time_s": stopped["trained"]["resnet20"]["wall_time_s"],
                                              "processes": 4, "exit_status": 0}
    assert (ckpt / "resnet20.pt.resume.pt").exists() and not stopped["experiments"]

    monkeypatch.setattr(gpu_paper_networks, "launch", lambda cmd: 1)           # a launch that fails
    with pytest.raises(SystemExit, match="on 4 processes failed"):
        gpu_paper_networks.main(TINY + ["--nproc", "4", "--out-dir", str(out), "--checkpoint-dir", str(ckpt)])
    from argparse import Namespace
    assert gpu_paper_networks.processes(Namespace(nproc=None, device="cpu")) == 1   # no GPU: one process
    assert gpu_paper_networks.processes(Namespace(nproc=3, device="cpu")) == 3

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
    assert meta["recipe"]["name"] == "paper, modified: epochs" and meta["epochs"] == 2
    res = json.loads((out / "data" / "results" / "dfpc_paper_resnet20.json").read_text())
    rows = res["methods"]["DFPC (coupled)"]["steps"]
    assert rows[0]["gpu_speedup"] == 1.0 and len(rows) >= 2
    for r in rows[1:]:
        within = r["accuracy_drop"] is not None and r["accuracy_drop"] <= 10.0
        assert (r["gpu_speedup"] is not None) == within

"""Train one architecture with the course recipe, choosing the epoch count to fit a time budget.

Used on a lent GPU machine, where one command may run only minutes: it times a few training steps
(on the real model and batch size, while anything else sharing the GPU is running too), picks the
largest epoch count whose one-cycle schedule ends inside the budget, then calls
``pruning_lib.course.training.train`` from scratch with it.

    python scripts/train_within_budget.py --arch cifar_resnet50 --budget-s 480 --max-epochs 60 \
        --batch-size 256 --lr 0.3 --out build/gpu/cifar_resnet50.pt
"""
from __future__ import annotations

import argparse
import time

import torch

from pruning_lib.course import data as cdata
from pruning_lib.course.models import get_model
from pruning_lib.course.training import TrainConfig, _make_optimizer, train, train_epochs


def seconds_per_step(cfg: TrainConfig, device: torch.device, steps: int = 30) -> float:
    """Median-free estimate: time of the second of two short runs (the first pays cuDNN tuning)."""
    split = cdata.load_split("train").subset(steps * cfg.batch_size // 10 * 10, seed=1).to(device)
    model = get_model(cfg.arch).to(device).to(memory_format=torch.channels_last)
    opt, sched = _make_optimizer(model, cfg, steps)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_epochs(model, split, 1, opt, None, cfg.label_smoothing, gen, device,
                     batch_size=cfg.batch_size, desc="probe", amp=cfg.amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[-1] / (len(split) // cfg.batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", required=True)
    p.add_argument("--budget-s", type=float, required=True, help="seconds for training (evaluation excluded)")
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cutout", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TrainConfig(arch=a.arch, epochs=a.max_epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                      cutout=a.cutout)
    t0 = time.perf_counter()
    sps = seconds_per_step(cfg, device)
    steps_per_epoch = len(cdata.load_split("train")) // cfg.batch_size
    left = a.budget_s - (time.perf_counter() - t0)
    epochs = max(1, min(a.max_epochs, int(left / (1.08 * sps * steps_per_epoch))))
    print(f"{a.arch}: {sps * 1000:.1f} ms/step, {sps * steps_per_epoch:.1f} s/epoch -> {epochs} epochs "
          f"in {left:.0f} s", flush=True)
    cfg.epochs = epochs
    r = train(cfg, a.out, device)
    print(f"{a.arch}: test accuracy {r.test_accuracy:.2f}% after {r.epochs} epochs "
          f"({r.wall_time_s:.0f} s on {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'})",
          flush=True)


if __name__ == "__main__":
    main()

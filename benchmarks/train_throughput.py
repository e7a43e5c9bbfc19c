"""Benchmark (not a test): training throughput of the CIFAR ResNets, in images/s and model FLOP
utilisation, on the device this runs on (a CUDA GPU when present, else the CPU).

Run: `make bench` or `python benchmarks/train_throughput.py [--archs cifar_resnet50] [--steps 50]`.

The timed step is the trainer's own (:func:`pruning_lib.course.training.train_step`): the uint8 images live
on the device, each batch is cropped, flipped and normalised there (as in training), bfloat16
autocast, channels_last, SGD with the ``paper`` recipe's settings, and no host synchronisation inside
the timed loop (the device is synchronised once before and once after it).

Utilisation (MFU) = FLOPs of one training step (forward and backward, counted by
``torch.utils.flop_counter``) x steps per second / the device's bfloat16 matrix-multiply rate,
measured here by timing a large bf16 matmul; so it is relative to what this device's matmul achieves,
not to a datasheet number. The last column projects the wall time of the ``paper`` recipe (200 epochs
of the 46,000-image train split) at the measured rate.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pruning_lib.course import data as cdata
from pruning_lib.course.models import get_model
from pruning_lib.course.training import RECIPES, _make_optimizer, train_step

TRAIN_IMAGES = 46_000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, n: int | None = None, repeats: int = 10) -> float:
    """Measured bfloat16 matrix-multiply rate of ``device`` in FLOP/s (an n x n by n x n product)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t)


def synthetic_split(n: int, device: torch.device) -> cdata.CIFAR10Split:
    """Random uint8 images with labels, resident on ``device`` (throughput does not depend on content)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return cdata.CIFAR10Split("synthetic", x, y, "synthetic").to(device)


def measure(arch: str, device: torch.device, batch: int, steps: int, warmup: int, compile: str | None,
            rate: float) -> dict:
    """Images/s, step time, FLOPs per step and MFU of ``arch``'s training step on ``device``."""
    torch.manual_seed(0)
    cfg = RECIPES["paper"]
    model = get_model(arch).to(device).to(memory_format=torch.channels_last).train()
    opt, _ = _make_optimizer(model, cfg, steps_per_epoch=warmup + steps)
    run = torch.compile(model, mode=compile) if compile else model
    split = synthetic_split(batch * (warmup + steps), device)
    gen = torch.Generator().manual_seed(0)
    it = cdata.batches(split, batch, shuffle=True, train_augment=True, generator=gen, drop_last=True)
    x0, y0 = next(iter(cdata.batches(split, batch)))
    with FlopCounterMode(display=False) as counter:
        train_step(model, x0, y0, opt, None, 0.0, device, amp=True)
    flops = counter.get_total_flops()
    t_first = time.perf_counter()
    for _ in range(warmup):
        x, y = next(it)
        train_step(run, x, y, opt, None, 0.0, device, amp=True)
    sync(device)
    t0 = time.perf_counter()
    total = torch.zeros((), device=device)
    for _ in range(steps):
        x, y = next(it)
        total += train_step(run, x, y, opt, None, 0.0, device, amp=True).float()
    sync(device)
    dt = time.perf_counter() - t0
    ips = batch * steps / dt
    return {"arch": arch, "device": str(device), "batch": batch, "compile": compile or "eager",
            "warmup_s": round(t0 - t_first, 2), "step_ms": round(1000 * dt / steps, 2),
            "images_per_s": round(ips, 1), "train_step_gflop": round(flops / 1e9, 2),
            "achieved_tflops": round(flops * steps / dt / 1e12, 3),
            "matmul_tflops": round(rate / 1e12, 3), "mfu_percent": round(100 * flops * steps / dt / rate, 2),
            "paper_recipe_minutes": round(cfg.epochs * TRAIN_IMAGES / ips / 60, 1)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default="cifar_resnet18,cifar_resnet50,cifar_resnet101")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 100 on a GPU, 3 on a CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 20 on a GPU, 1 on a CPU)")
    p.add_argument("--compile", default=None,
                   help="torch.compile mode for the step, e.g. max-autotune-no-cudagraphs (default: eager)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    steps = a.steps or (100 if gpu else 3)
    warmup = a.warmup if a.warmup is not None else (20 if gpu else 1)
    rate = matmul_rate(device)
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}: measured bf16 matmul {rate / 1e12:.2f} TFLOP/s; batch {a.batch_size}, "
          f"{warmup} warm-up + {steps} timed steps, {a.compile or 'eager'}")
    rows = []
    for arch in a.archs.split(","):
        r = measure(arch, device, a.batch_size, steps, warmup, a.compile, rate)
        rows.append(r)
        print(f"  {arch:16s} {r['images_per_s']:9.1f} images/s  {r['step_ms']:8.1f} ms/step  "
              f"{r['train_step_gflop']:8.1f} GFLOP/step  MFU {r['mfu_percent']:5.1f} %  "
              f"paper recipe (200 epochs) {r['paper_recipe_minutes']:7.1f} min", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": where, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()

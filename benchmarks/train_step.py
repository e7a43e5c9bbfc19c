"""Benchmark (not a test): one training step of the course's recipe, eager against ``torch.compile``,
measured in the same run, to decide whether ``python -m pruning_lib.train --compile`` pays off.

Run: `make bench` or `python benchmarks/train_step.py [--arch resnet56] [--steps 12]`.

The step is the trainer's: channels_last input, bfloat16 autocast (unless --no-amp), label-smoothed
cross-entropy, SGD with Nesterov momentum. After warm-up steps (the compiled model's first step
includes compilation, printed separately) the two are timed interleaved, step by step, so that load
from other processes falls on both alike; medians are printed with the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pruning_lib.course.models import get_model


def make_step(arch: str, batch: int, compiled: bool, amp: bool):
    torch.manual_seed(0)
    model = get_model(arch).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    run = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(run(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="timed steps of each")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-amp", action="store_true")
    a = p.parse_args()
    amp = not a.no_amp
    eager = make_step(a.arch, a.batch_size, False, amp)
    compiled = make_step(a.arch, a.batch_size, True, amp)
    first = compiled()
    for _ in range(a.warmup):
        eager(), compiled()
    te, tc = [], []
    for _ in range(a.steps):
        te.append(eager())
        tc.append(compiled())
    me, mc = statistics.median(te), statistics.median(tc)
    print(f"{a.arch}, batch {a.batch_size}, {'bfloat16 autocast' if amp else 'float32'}, "
          f"{torch.get_num_threads()} threads")
    print(f"  first compiled step (compilation included): {first:.1f} s")
    print(f"  eager    median {me:.3f} s/step")
    print(f"  compiled median {mc:.3f} s/step")
    print(f"  compiled/eager time ratio {mc / me:.2f} (speed-up {me / mc:.2f}x); "
          f"compilation pays for itself after {first / max(me - mc, 1e-9):.0f} steps" if mc < me else
          f"  compiled/eager time ratio {mc / me:.2f}: no speed-up")


if __name__ == "__main__":
    main()

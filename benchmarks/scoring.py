"""Benchmark (not a test): time to compute the DFPC score of every channel of every DFC, for the
CIFAR ResNet-50 at 32x32 and torchvision's ResNet-101 at 224x224 (random weights: timing only).

Run: `python benchmarks/scoring.py` (or `make bench`). The released DFPC code builds unrolled sparse
matrices for this; here the bound is read off one convolution and one transposed convolution of
all-ones tensors per layer (pruning_lib.scoring.dfpc), so it takes well under a second or two on a CPU.
Discovery (tracing the graph) is timed separately; medians and quartiles over repeats are printed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pruning_lib.graph import discover
from pruning_lib.scoring import l1_scores
from pruning_lib.scoring.dfpc import dfpc_scores
from pruning_lib.course.models import get_model


def _timed(fn, repeats: int) -> tuple[str, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return f"median {q[1]:.3f} s (q1 {q[0]:.3f}, q3 {q[2]:.3f}, n={len(times)})", out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    for name, classes, size in (("cifar_resnet50", 10, 32), ("torchvision/resnet101", 1000, 224)):
        model = get_model(name, num_classes=classes).eval()
        shape = (1, 3, size, size)
        t_disc, graph = _timed(lambda: discover(model, shape), args.repeats)
        t_dfpc, scores = _timed(lambda: dfpc_scores(model, graph), args.repeats)
        t_l1, _ = _timed(lambda: l1_scores(model, graph), args.repeats)
        print(f"\n{name} at {shape}: {len(graph.dfcs)} DFCs, {graph.num_coupled} coupled, "
              f"{graph.num_channels} channels scored ({len(scores)})")
        print(f"  discover     {t_disc}")
        print(f"  DFPC scores  {t_dfpc}")
        print(f"  L1 scores    {t_l1}")


if __name__ == "__main__":
    main()

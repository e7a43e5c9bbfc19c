"""Benchmark (not a test): coupled-channel discovery time on torchvision ResNet-101 at 224x224,
beside Torch-Pruning's dependency-graph build on the same model, measured in the same run.

Run: `make bench` (installs the `bench` extra, torch-pruning) or `python benchmarks/discovery.py`.
Goal from the course: under 2 s and faster than Torch-Pruning.

The two are measured interleaved (ours, theirs, ours, ...) so that load from other processes on a
shared machine falls on both alike; medians and quartiles are printed. Our time is also split into
its three stages: torch.fx trace, shape propagation on the meta device, the channel-graph pass.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pruning_lib.graph.propagation import Propagation
from pruning_lib.graph.tracing import propagate_shapes, trace
from pruning_lib.graph import discover
from pruning_lib.course.models import get_model


def _quartiles(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f"median {q[1]:.3f} s (q1 {q[0]:.3f}, q3 {q[2]:.3f}, n={len(xs)})"


def stages(model, shape) -> tuple[float, float, float]:
    """Seconds spent in trace / shape propagation / channel-graph pass (one run)."""
    t0 = time.perf_counter()
    gm = trace(model)
    t1 = time.perf_counter()
    propagate_shapes(gm, torch.zeros(shape))
    t2 = time.perf_counter()
    Propagation(gm).run(shape)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="torchvision/resnet101")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = get_model(args.model, num_classes=1000).eval()
    shape = (1, 3, args.size, args.size)
    print(f"{args.model} at {shape}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    g = discover(model, shape)
    print(f"pruning_lib.discover -> {len(g.dfcs)} DFCs, {g.num_coupled} coupled, "
          f"{g.num_channels} prunable channels")
    try:
        import torch_pruning as tp
    except ImportError:
        tp = None
        print("torch-pruning not installed (pip install -e '.[bench]'): no comparison")
    x = torch.randn(shape)

    def ours():
        discover(model, shape)

    def theirs():
        tp.DependencyGraph().build_dependency(model, example_inputs=x)

    ours()                                          # warm-up: imports, first-call overheads
    if tp is not None:
        theirs()
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t)
        if tp is not None:
            t = time.perf_counter()
            theirs()
            t_theirs.append(time.perf_counter() - t)
    st = [stages(model, shape) for _ in range(3)]
    tr, sh, ps = (statistics.median(s[i] for s in st) for i in range(3))
    print(f"pruning_lib.discover:                 {_quartiles(t_ours)}  "
          f"[trace {tr:.3f} s, shapes {sh:.3f} s, pass {ps:.3f} s]")
    if tp is not None:
        from importlib.metadata import version as _dist_version
        version = _dist_version("torch-pruning")
        print(f"torch_pruning {version} build_dependency:  {_quartiles(t_theirs)}")
        ratio = statistics.median(t_theirs) / statistics.median(t_ours)
        print(f"Torch-Pruning / pruning_lib: {ratio:.1f}x; goal < 2 s: "
              f"{'met' if statistics.median(t_ours) < 2 else 'NOT met'}; faster: {'yes' if ratio > 1 else 'NO'}")


if __name__ == "__main__":
    main()

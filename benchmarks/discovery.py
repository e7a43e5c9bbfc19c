"""Benchmark (not a test): coupled-channel discovery time on torchvision ResNet-101 at 224x224,
beside Torch-Pruning's dependency-graph build on the same model, measured in the same run.

Run: `make bench` (installs the `bench` extra, torch-pruning) or `python benchmarks/discovery.py`.
Goal from the course: under 2 s and faster than Torch-Pruning.
"""
import statistics
import time

import torch

from pruning_lib.coupling import discover
from pruning_lib.models import get_model

REPEATS = 5


def timed(fn) -> list[float]:
    fn()                                   # warm-up (imports, first-call overheads)
    out = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    model = get_model("torchvision/resnet101", num_classes=1000).eval()
    shape = (1, 3, 224, 224)
    ours = timed(lambda: discover(model, shape))
    g = discover(model, shape)
    print(f"pruning_lib.discover: {statistics.median(ours):.3f} s median of {REPEATS} "
          f"(min {min(ours):.3f}) -> {len(g.dfcs)} DFCs, {g.num_coupled} coupled, {g.num_channels} channels")
    try:
        import torch_pruning as tp
    except ImportError:
        print("torch-pruning not installed (pip install -e '.[bench]'): no comparison")
        return
    x = torch.randn(shape)
    theirs = timed(lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x))
    print(f"torch_pruning.DependencyGraph.build_dependency ({tp.__version__ if hasattr(tp, '__version__') else ''}): "
          f"{statistics.median(theirs):.3f} s median of {REPEATS} (min {min(theirs):.3f})")
    print(f"ratio Torch-Pruning / pruning_lib: {statistics.median(theirs) / statistics.median(ours):.2f}x")


if __name__ == "__main__":
    main()

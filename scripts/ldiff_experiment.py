"""Heavier LDIFF run (TVSPrune's claim: LDIFF indicates how well random pruning of a layer goes).

For each shipped checkpoint named, randomly prunes ``--fraction`` of one single-layer DFC at a time
(``--seeds`` random sets), measures the accuracy drop on a class-balanced subset of ``val``, and prints
the per-layer table and Spearman's rho between LDIFF and the drop; ``--out`` writes the rows as JSON.

    python scripts/ldiff_experiment.py resnet20 resnet56 --seeds 0 1 2 --eval-images 1000
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pruning_lib.course.checkpoints import load_checkpoint
from pruning_lib.course.data import default_data_dir, load_split
from pruning_lib.course.ldiff_experiment import LdiffResult, ldiff_experiment


def parser() -> argparse.ArgumentParser:
    """The command line; a results file records the settings it resolved to (``fraction``, ``seeds``...)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="checkpoint names in data/checkpoints (e.g. resnet20 resnet56)")
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--distance", default="hellinger_lb", choices=["hellinger_lb", "tv_exact", "mean_gap", "hellinger"])
    p.add_argument("--stats-per-class", type=int, default=None, help="dist images per class (default: all 200)")
    p.add_argument("--eval-images", type=int, default=1000, help="class-balanced val images (0 = all 2000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def run(model: torch.nn.Module, name: str, args: argparse.Namespace, **kw) -> LdiffResult:
    """The experiment on one model as :func:`main` runs it; ``kw`` (e.g. ``seeds``, ``layers``)
    overrides arguments for a shortened rerun."""
    settings = dict(fraction=args.fraction, seeds=args.seeds, distance=args.distance,
                    stats_per_class=args.stats_per_class, eval_images=args.eval_images or None, progress=True)
    return ldiff_experiment(model, name, **{**settings, **kw})


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        model, meta = load_checkpoint(default_data_dir() / "checkpoints" / f"{name}.pt")
        t0 = time.perf_counter()
        copy = meta.get("data_copy")                 # the copy the checkpoint was trained on
        r = run(model, name, args, stats_split=load_split("dist", copy=copy), eval_split=load_split("val", copy=copy))
        print(f"\n{name} (val[{r.eval_images}] accuracy {r.base_accuracy:.2f} %, {args.distance}, "
              f"{time.perf_counter() - t0:.0f} s)")
        print(r.table())
        results[name] = asdict(r)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

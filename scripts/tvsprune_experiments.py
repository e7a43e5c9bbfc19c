"""IterTVSPrune against L1 and random pruning at the TVSPrune paper's parameter sparsities, no fine-tuning.

For each target sparsity: IterTVSPrune (scores re-estimated on ``dist`` every step, at most
``--max-step`` of the parameters per step, no accuracy floor), the same model after BN recalibration
on ``dist`` (with the training augmentation, on plain images, and of the running means only), and
the baselines at the same sparsity with the same allocation rule (channels ranked by score /
layer-mean score across DFCs): one-shot TVS scores, L1 of the feed-in filters, random (several
seeds), each also after BN recalibration (full, and of the means only). Every reported accuracy is
on the 10,000 test images; ``val`` only inside the runs.

    python scripts/tvsprune_experiments.py --model resnet20          # writes data/results/tvsprune_resnet20.json
    python scripts/tvsprune_experiments.py --model resnet56 --device cuda
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pruning_lib as pl                                           # noqa: E402
from pruning_lib.course.checkpoints import load_checkpoint       # noqa: E402
from pruning_lib.graph import discover                 # noqa: E402
from pruning_lib.course.data import load_split                   # noqa: E402
from pruning_lib.course.training import evaluate                    # noqa: E402

# Accuracy change in points vs. unpruned, IterTVSPrune without fine-tuning (shared/papers/tvsprune.md).
PAPER = {"resnet56": {0.035: -1.47, 0.076: -4.82, 0.123: -9.86},
         "resnet20": {0.024: -1.4, 0.048: -4.7, 0.071: -9.41}}


def parser() -> argparse.ArgumentParser:
    """The command line; a results file records the command it was run with (``command``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(PAPER), default="resnet20")
    p.add_argument("--checkpoint", default=None, help="default data/checkpoints/<model>.pt")
    p.add_argument("--targets", type=float, nargs="*", default=None, help="fractions, default the paper's")
    p.add_argument("--max-step", type=float, default=0.01, help="fraction of parameters removed per step at most")
    p.add_argument("--seeds", type=int, default=3, help="random-baseline seeds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="default data/results/tvsprune_<model>.json")
    return p


def command(a: argparse.Namespace) -> str:
    """The command that reproduces the results: the model, and every option that changes them and
    differs from its default (``tests/test_stored_results.py`` reruns a file from this)."""
    default = parser().parse_args([])
    cmd = f"python scripts/tvsprune_experiments.py --model {a.model}"
    cmd += f" --device {a.device}" if a.device != "cpu" else ""
    cmd += f" --checkpoint {shlex.quote(a.checkpoint)}" if a.checkpoint else ""
    cmd += " --targets " + " ".join(f"{t:g}" for t in a.targets) if a.targets else ""
    cmd += f" --max-step {a.max_step:g}" if a.max_step != default.max_step else ""
    cmd += f" --seeds {a.seeds}" if a.seeds != default.seeds else ""
    return cmd


def checkpoint_path(a: argparse.Namespace) -> Path:
    """The checkpoint pruned: ``--checkpoint`` (a relative path is read from the project root, so a
    results file's recorded command reruns from anywhere), else ``data/checkpoints/<model>.pt``."""
    return ROOT / a.checkpoint if a.checkpoint else ROOT / "data" / "checkpoints" / f"{a.model}.pt"


def target_sparsities(a: argparse.Namespace) -> list[float]:
    """The parameter sparsities run: ``--targets``, else the paper's for the model."""
    return a.targets or sorted(PAPER[a.model])


def bn_cutout(meta: dict) -> int:
    """The Cutout side the checkpoint was trained with (BN recalibration shows the samples the same way)."""
    return int((meta.get("recipe") or {}).get("cutout", 0) or 0)


def iter_tvs(model: torch.nn.Module, dist, val, target: float, a: argparse.Namespace, **kw) -> pl.IterResult:
    """IterTVSPrune as :func:`main` runs it; ``kw`` (e.g. ``max_iterations``) shortens a rerun."""
    return pl.iter_tvs_prune(model, pl.Target(parameters=target), data=dist, evaluate=val, max_step=a.max_step,
                             name=a.model, **kw)


def recalibrate(m: torch.nn.Module, dist, cutout: int, augment: bool = True, variance: bool = True) -> torch.nn.Module:
    """BN recalibration on ``dist`` as :func:`main` applies it (a copy; the model is not modified)."""
    return pl.bn_recalibrate(m, data=dist, augment=augment, cutout=cutout, variance=variance)


def baseline(model: torch.nn.Module, graph, criterion: str, target: float, seed: int = 0) -> pl.PruningResult:
    """The L1 or random baseline at ``target`` with TVSPrune's allocation rule (as :func:`main`)."""
    scores = pl.l1_scores(model, graph) if criterion == "l1" else pl.random_scores(model, graph, seed=seed)
    return pl.prune_to_sparsity(model, pl.Target(parameters=target), criterion=scores)


def main(argv=None) -> dict:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    ckpt = checkpoint_path(a)
    model, meta = load_checkpoint(ckpt)
    model = model.to(a.device).eval()
    dist, val, test = (load_split(s, copy=meta.get("data_copy")) for s in ("dist", "val", "test"))
    cutout = bn_cutout(meta)
    base_test = evaluate(model, test)
    graph = discover(model, (1, 3, 32, 32))
    targets = target_sparsities(a)
    tvs_once = pl.tvs_scores(model, graph, data=dist)

    def recal(m, augment=True, variance=True):
        return recalibrate(m, dist, cutout, augment=augment, variance=variance)

    def entry(m, sparsity, **extra):
        acc = evaluate(m, test)
        return {"sparsity_%": round(100 * sparsity, 3), "test_accuracy": acc,
                "drop": round(acc - base_test, 2), **extra}

    rows = []
    for tgt in targets:
        print(f"target {100 * tgt:.1f} %", flush=True)
        res = iter_tvs(model, dist, val, tgt, a)
        row = {"target_%": round(100 * tgt, 2), "paper_drop": PAPER[a.model].get(round(tgt, 3)),
               "iter_tvs": entry(res.model, res.sparsity, steps=len(res.report.steps) - 1,
                                 iterations=res.iterations, stop=res.stop_reason,
                                 val_accuracy=res.report.final.accuracy),
               "iter_tvs_bn": entry(recal(res.model), res.sparsity),
               "iter_tvs_bn_plain": entry(recal(res.model, augment=False), res.sparsity),
               "iter_tvs_bn_mean": entry(recal(res.model, variance=False), res.sparsity),
               "report": res.report.to_dict()}
        once = pl.prune_to_sparsity(model, pl.Target(parameters=tgt), criterion=tvs_once)
        row["tvs_oneshot"] = entry(once.model, once.sparsity)
        l1 = baseline(model, graph, "l1", tgt)
        row["l1"] = entry(l1.model, l1.sparsity)
        row["l1_bn"] = entry(recal(l1.model), l1.sparsity)
        row["l1_bn_mean"] = entry(recal(l1.model, variance=False), l1.sparsity)
        rnd, rnd_bn, rnd_bn_mean = [], [], []
        for seed in range(a.seeds):
            r = baseline(model, graph, "random", tgt, seed=seed)
            rnd.append(entry(r.model, r.sparsity, seed=seed))
            rnd_bn.append(entry(recal(r.model), r.sparsity, seed=seed))
            rnd_bn_mean.append(entry(recal(r.model, variance=False), r.sparsity, seed=seed))
        for key, runs in (("random", rnd), ("random_bn", rnd_bn), ("random_bn_mean", rnd_bn_mean)):
            drops = [r["drop"] for r in runs]
            row[key] = {"sparsity_%": round(statistics.mean(r["sparsity_%"] for r in runs), 3),
                        "drop": round(statistics.mean(drops), 2),
                        "drop_std": round(statistics.stdev(drops), 2) if len(drops) > 1 else 0.0,
                        "runs": runs}
        rows.append(row)
        print("  " + "  ".join(f"{k}={row[k]['drop']:+.2f}" for k in
                               ("iter_tvs", "iter_tvs_bn", "iter_tvs_bn_mean", "tvs_oneshot", "l1", "random")), flush=True)
    out = {"model": a.model, "checkpoint": str(ckpt.relative_to(ROOT)) if ckpt.is_relative_to(ROOT) else str(ckpt),
           "checkpoint_test_accuracy": meta.get("test_accuracy"), "base_test_accuracy": base_test,
           "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu",
           "max_step": a.max_step, "seeds": a.seeds, "bn_cutout": cutout,
           "command": command(a),
           "wall_s": round(time.time() - t0, 1), "rows": rows}
    path = Path(a.out) if a.out else ROOT / "data" / "results" / f"tvsprune_{a.model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} in {out['wall_s']} s")
    return out


if __name__ == "__main__":
    main()

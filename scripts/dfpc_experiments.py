"""DFPC experiments: accuracy against measured CPU speedup for DFPC (with and without coupled
channels), L1 and random scores, data-free (no fine-tuning), plus a short fine-tune of each method's
most-pruned model. Writes ``data/results/dfpc_<model>.json``.

    python scripts/dfpc_experiments.py --model resnet56 --test-subset 2000
    python scripts/dfpc_experiments.py --model cifar_resnet50 --test-subset 1000 --step-fraction 0.03

Accuracy: on the CIFAR-10 ``test`` split (a fixed class-balanced subset when ``--test-subset`` > 0).
Latency: batch 64 on the CPU, fixed threads, warm-up, median of repeated passes; each method's
models are timed interleaved with the unpruned model in one run, and speedup is their ratio.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pruning_lib.course.checkpoints import load_checkpoint
from pruning_lib.course.data import CIFAR10Split, default_data_dir, load_split
from pruning_lib.pruning import GlobalPruningResult, Target, global_prune
from pruning_lib.measure import compare_latency, speedups
from pruning_lib.course.training import evaluate, fine_tune

METHODS = {                                  # label -> (criterion, prune coupled DFCs)
    "DFPC (coupled)": ("dfpc", True),
    "DFPC (no coupled)": ("dfpc", False),
    "L1": ("l1", True),
    "random": ("random", True),
}


def best_within(rows: list[dict], drop: float, key: str = "speedup") -> dict | None:
    """The step with the largest ``key`` among those losing at most ``drop`` points."""
    ok = [r for r in rows if r.get("accuracy_drop") is not None and r["accuracy_drop"] <= drop
          and r.get(key) is not None]
    return max(ok, key=lambda r: r[key]) if ok else None


def parser() -> argparse.ArgumentParser:
    """The command line; a results file records the parsed settings (``settings``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet56", help="checkpoint name in data/checkpoints")
    p.add_argument("--test-subset", type=int, default=2000, help="test images (class-balanced; 0: all 10,000)")
    p.add_argument("--step-fraction", type=float, default=0.02)
    p.add_argument("--max-fraction", type=float, default=0.6, help="at most this fraction of eligible channels")
    p.add_argument("--stop-drop", type=float, default=30.0, help="stop a curve beyond this accuracy drop")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=2, help="CPU threads for timing and evaluation")
    p.add_argument("--latency-threads", type=int, default=None, help="CPU threads for timing (default: --threads)")
    p.add_argument("--latency-batch", type=int, default=64)
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--latency-every", type=int, default=1, help="time every n-th step (and the last)")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-subset", type=int, default=0, help="train images for the fine-tune (0: all)")
    p.add_argument("--device", default="cpu", help="device for evaluation and fine-tuning (timing: CPU)")
    p.add_argument("--align", type=int, default=1, help="keep channel counts multiples of this")
    p.add_argument("--out", default=None)
    return p


def accuracy_split(test_subset: int, copy: str | None = None) -> CIFAR10Split:
    """The images every step is evaluated on: ``test``, or its class-balanced subset of ``test_subset``."""
    test = load_split("test", copy=copy)
    return test.subset(test_subset, seed=0) if test_subset else test


def prune_curve(model: torch.nn.Module, label: str, a: argparse.Namespace, test: CIFAR10Split | None, *,
                max_steps: int | None = None, progress: bool = True) -> GlobalPruningResult:
    """One method's curve as :func:`main` runs it with settings ``a``. ``test=None`` measures no
    accuracy (so there is no accuracy stop) and ``max_steps`` cuts the run short: a cheap rerun of
    a stored curve's first steps (``tests/test_stored_results.py``)."""
    crit, coupled = METHODS[label]
    target = Target(accuracy_drop=a.stop_drop if test is not None else None, channels=a.max_fraction)
    return global_prune(model, target, criterion=crit, evaluate=test, input_shape=(1, 3, 32, 32),
                        step_fraction=a.step_fraction, coupled=coupled, name=a.model, align=a.align,
                        max_steps=max_steps, progress=progress)


def main(argv=None) -> dict:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    lat_threads = a.latency_threads or a.threads
    t_start = time.perf_counter()
    out = Path(a.out) if a.out else default_data_dir() / "results" / f"dfpc_{a.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def dump(partial: bool) -> None:         # written after every phase, so an interrupted run leaves data
        result["wall_time_s"] = round(time.perf_counter() - t_start, 1)
        result["complete"] = not partial
        out.write_text(json.dumps(result, indent=1))

    model, meta = load_checkpoint(default_data_dir() / "checkpoints" / f"{a.model}.pt")
    test = accuracy_split(a.test_subset, copy=meta.get("data_copy"))     # the copy it was trained on
    dev = torch.device(a.device)
    test_dev = test          # on the CPU: evaluate() moves each batch to the model (a split on the GPU trips it)
    model = model.to(dev)
    result = {"model": a.model, "checkpoint_test_accuracy": meta.get("test_accuracy"),
              "accuracy_split": test.name, "settings": vars(a), "methods": {},
              "hardware": f"{platform.processor() or platform.machine()}, {lat_threads} threads"
                          + (f", {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""),
              "latency_protocol": f"batch {a.latency_batch}, CPU, {lat_threads} threads, 3 warm-up, "
                                  f"median of {a.latency_repeats}, interleaved with the unpruned model"}
    runs = {}
    for label in a.methods.split(","):
        r = prune_curve(model, label, a, test_dev)
        runs[label] = r
        print(r.report.table(), flush=True)

    # latency: per method, all its steps interleaved with the unpruned model, on the CPU
    base_cpu = runs[next(iter(runs))].original.cpu()
    for label, r in runs.items():
        steps = r.report.steps
        timed = [s.step for s in steps[1:] if s.step % a.latency_every == 0 or s.step == steps[-1].step]
        models = {"unpruned": base_cpu}
        models.update({f"step{t}": r.model_at(t).cpu() for t in timed})
        lat = compare_latency(models, (a.latency_batch, 3, 32, 32), repeats=a.latency_repeats, threads=lat_threads)
        sp = speedups(lat, "unpruned")
        steps[0].latency_ms, steps[0].speedup = lat["unpruned"].median_ms, 1.0
        for t in timed:
            steps[t].latency_ms, steps[t].speedup = lat[f"step{t}"].median_ms, round(sp[f"step{t}"], 4)
        del models
        print(label, {t: steps[t].speedup for t in timed}, flush=True)

    for label, r in runs.items():
        rows = r.report.rows()
        entry = {"criterion": r.scores.method, "coupled": r.report.info["coupled"], "steps": rows,
                 "stop_reason": r.stop_reason, "channels_per_step": r.report.info["channels_per_step"],
                 "eligible_channels": r.report.info["eligible_channels"]}
        for drop in (2.0, 5.0, 10.0):
            best = best_within(rows, drop)
            entry[f"within_{drop:g}_points"] = None if best is None else {
                "step": best["step"], "speedup": best["speedup"], "flops_reduction": best["flops_reduction"],
                "params_reduction": rows[0]["parameters"] / best["parameters"], "accuracy": best["accuracy"],
                "accuracy_drop": best["accuracy_drop"],
                "speedup_per_flops_reduction": best["speedup"] / best["flops_reduction"]}
        result["methods"][label] = entry
    dump(partial=bool(a.finetune_epochs))

    # short fine-tune of each method's most pruned model
    if a.finetune_epochs:
        train = load_split("train", copy=meta.get("data_copy"))
        if a.finetune_subset:
            train = train.subset(a.finetune_subset, seed=0)
        train = train.to(dev)
        for label, r in runs.items():
            last = r.report.rows()[-1]
            pruned = r.model_at(last["step"]).to(dev)
            t0 = time.perf_counter()
            tuned = fine_tune(pruned, epochs=a.finetune_epochs, split=train, device=dev)
            result["methods"][label]["fine_tune"] = {
                "step": last["step"], "epochs": a.finetune_epochs, "train_images": len(train),
                "accuracy_before": last["accuracy"], "speedup": last["speedup"],
                "accuracy_after": round(evaluate(tuned, test_dev), 4), "seconds": round(time.perf_counter() - t0, 1)}
            print(label, result["methods"][label]["fine_tune"], flush=True)
            dump(partial=True)
    dump(partial=False)
    print("wrote", out)
    return result


if __name__ == "__main__":
    main()

"""Repair without the training set (issue 25): accuracy, FLOPs, parameters and measured CPU speedup of
every criterion x repair cell on one checkpoint, each pruning step repaired from the unpruned model
(ModHiFi-P's procedure, ``pruning_lib.repair``). Writes ``data/results/repair_<model>.json``.

    python scripts/repair_experiments.py --model resnet56
    python scripts/repair_experiments.py --model resnet56 --criteria dfpc --repairs bn+compensation --calibration synth
    python scripts/repair_experiments.py --model cifar_resnet50 --criteria dfpc,hifi --repairs none,bn+compensation

Each criterion orders the channels once on the unpruned model; step n removes the first n x
``--step-fraction`` of that order, and every repair cell is evaluated on those same steps (the
pruned architecture, so the speedup, is shared by the repairs of one criterion). A cell's curve stops
after its first step beyond ``--stop-drop``. Accuracy: the CIFAR-10 ``test`` split (all 10,000 JPEG
images unless ``--test-subset``); calibration: the course's ``dist`` split (real, unlabelled use
only) or images synthesised from the network's BatchNorm statistics (``--calibration synth``).
Latency: CPU, batch 64 and batch 1, fixed threads, every timed step interleaved with the unpruned model.

Resumable: the file is rewritten after every evaluation, and a rerun with the same settings skips
what the file already holds (``--fresh`` starts over); each criterion's scores of the unpruned model are
kept beside it (``<out>.<criterion>-scores.pt``), so a resumed run does not score again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import torch

from pruning_lib.course.checkpoints import load_checkpoint
from pruning_lib.graph import discover
from pruning_lib.course.data import default_data_dir, load_split
from pruning_lib.measure import compare_latency, count_flops, count_parameters, evaluate, speedups
from pruning_lib.pruning import Target, global_prune
from pruning_lib.pruning.channel_cost import stages
from pruning_lib.repair import repair_pruned, synthesize_images
from pruning_lib.scoring import ChannelScores, get_criterion

REPAIRS = {"none": (), "bn": ("bn",), "bn+compensation": ("compensation", "bn"),
           "compensation": ("compensation",)}
INPUT = (1, 3, 32, 32)


def parser() -> argparse.ArgumentParser:
    """The command line; the results file records the parsed settings that shape its numbers."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet56", help="checkpoint name under data/checkpoints")
    p.add_argument("--criteria", default="dfpc,l1,hifi")
    p.add_argument("--repairs", default="none,bn,bn+compensation", help=f"comma-separated, of {list(REPAIRS)}")
    p.add_argument("--calibration", default="dist", choices=("dist", "synth"),
                   help="unlabelled samples for hifi and the repairs: the dist split, or synthesised images")
    p.add_argument("--synth-images", type=int, default=1024, help="images synthesised (--calibration synth)")
    p.add_argument("--synth-iterations", type=int, default=200)
    p.add_argument("--samples", type=int, default=None, help="calibration images the compensation reads (all)")
    p.add_argument("--bn-variance", action="store_true", help="BN re-estimation of the variances too (default: means)")
    p.add_argument("--sequential", action=argparse.BooleanOptionalAction, default=True,
                   help="compensate readers in execution order, each on the compensated upstream's output")
    p.add_argument("--test-subset", type=int, default=0, help="test images (class-balanced; 0: all 10,000)")
    p.add_argument("--step-fraction", type=float, default=0.04)
    p.add_argument("--max-fraction", type=float, default=0.7, help="at most this fraction of eligible channels")
    p.add_argument("--max-steps", type=int, default=None, help="at most this many steps (a quick run)")
    p.add_argument("--stop-drop", type=float, default=8.0, help="end a cell's curve after a step beyond this drop")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--latency-repeats", type=int, default=10)
    p.add_argument("--no-latency", action="store_true", help="skip the timing (a quick run)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing results file")
    p.add_argument("--out", default=None)
    return p


SHAPING = ("model", "calibration", "synth_images", "synth_iterations", "samples", "bn_variance", "sequential",
           "test_subset",
           "step_fraction", "max_fraction", "stop_drop")


def calibration_data(model, a: argparse.Namespace, data_copy: str | None):
    """The unlabelled samples of the run: the ``dist`` split, or images synthesised (and cached) from ``model``."""
    if a.calibration == "dist":
        return load_split("dist", copy=data_copy)
    cache = default_data_dir() / "cache" / f"synth-{a.model}-{a.synth_images}-{a.synth_iterations}.pt"
    t0 = time.perf_counter()
    syn = synthesize_images(model, a.synth_images, shape=INPUT[1:], iterations=a.synth_iterations, cache=cache)
    print(f"synthesised {a.synth_images} images ({time.perf_counter() - t0:.0f} s; cache {cache})", flush=True)
    return syn.loader()


def placement(graph, removals) -> dict[str, int]:
    """Removed channels by place: ``stream s<stage>`` (a coupled DFC) or ``block s<stage>``."""
    stage = stages(graph)
    out: dict[str, int] = {}
    for d, chans in removals.items():
        if chans:
            key = f"{'stream' if d.coupled else 'block'} s{stage[d]}"
            out[key] = out.get(key, 0) + len(chans)
    return dict(sorted(out.items()))


def best_within(rows: list[dict], drop: float) -> dict | None:
    """The most-pruned (fewest FLOPs) step losing at most ``drop`` points."""
    ok = [r for r in rows if r["accuracy_drop"] <= drop]
    return min(ok, key=lambda r: r["flops"]) if ok else None


def settings_of(result: dict) -> argparse.Namespace:
    """The arguments a results file was written with (its recorded settings over the defaults)."""
    a = parser().parse_args([])
    vars(a).update(result["settings"])
    return a


def scores_of(model, crit: str, data, a: argparse.Namespace, cache: Path | None):
    """``crit``'s scores of the unpruned ``model``, kept in ``cache`` so that a resumed run does not recompute
    them (a data-driven order costs minutes on ResNet-50); a cache of other settings is ignored and replaced."""
    key = {"criterion": crit, **{k: getattr(a, k) for k in ("model", "calibration", "synth_images", "synth_iterations")},
           "checkpoint_sha256": checkpoint_digest(a.model)}
    graph = discover(model, INPUT)
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved["key"] == key and [len(v) for v in saved["scores"]] == [d.channels for d in graph.dfcs]:
            return ChannelScores(saved["method"], graph, dict(zip(graph.dfcs, saved["scores"])))
    scores = get_criterion(crit)(model, graph, data=data)
    if cache is not None:
        tmp = cache.with_suffix(".tmp")
        torch.save({"key": key, "method": scores.method, "scores": [scores.scores[d] for d in graph.dfcs]}, tmp)
        tmp.replace(cache)                                 # never a half-written cache
    return scores


def checkpoint_digest(name: str) -> str:
    return hashlib.sha256((default_data_dir() / "checkpoints" / f"{name}.pt").read_bytes()).hexdigest()


def prune_order(model, crit: str, data, a: argparse.Namespace, max_steps: int | None = None,
                cache: Path | None = None):
    """``crit``'s removal order on the unpruned ``model``, cut into steps of ``a.step_fraction`` of the eligible
    channels (its scores read from / kept in ``cache`` when given)."""
    criterion = scores_of(model, crit, data, a, cache) if cache is not None else crit
    return global_prune(model, Target(channels=a.max_fraction), criterion=criterion, data=data, input_shape=INPUT,
                        step_fraction=a.step_fraction, max_steps=a.max_steps if max_steps is None else max_steps,
                        name=a.model)


def repaired_at(model, run, step: int, rep: str, data, a: argparse.Namespace):
    """Step ``step`` of ``run`` repaired from the unpruned ``model`` as the cell ``rep`` repairs it (a new model)."""
    if not REPAIRS[rep]:
        return run.model_at(step)
    fixed, _ = repair_pruned(model, run.graph, run.removals(step), data, repairs=REPAIRS[rep], samples=a.samples,
                             sequential=a.sequential, bn_variance=a.bn_variance)
    return fixed


def main(argv=None) -> dict:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    criteria, repairs = a.criteria.split(","), a.repairs.split(",")
    bad = [r for r in repairs if r not in REPAIRS]
    if bad:
        raise SystemExit(f"--repairs: {bad} unknown; choose from {list(REPAIRS)}")
    out = Path(a.out) if a.out else default_data_dir() / "results" / (
        f"repair_{a.model}" + ("_synth" if a.calibration == "synth" else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(a, k) for k in SHAPING}
    result = json.loads(out.read_text()) if out.exists() and not a.fresh else {}
    if result and result.get("settings") != settings:
        raise SystemExit(f"{out} was written with other settings {result.get('settings')}; pass the same ones, "
                         "--out elsewhere, or --fresh")
    t_start = time.perf_counter() - result.get("wall_time_s", 0.0)

    model, meta = load_checkpoint(default_data_dir() / "checkpoints" / f"{a.model}.pt")
    test = load_split("test", copy=meta.get("data_copy"))
    test = test.subset(a.test_subset, seed=0) if a.test_subset else test
    data = calibration_data(model, a, meta.get("data_copy"))
    base_acc = result.get("accuracy") or round(evaluate(model, test), 2)
    result.update(model=a.model, checkpoint_test_accuracy=meta.get("test_accuracy"), accuracy=base_acc,
                  accuracy_split=test.name, flops=count_flops(model, INPUT), parameters=count_parameters(model),
                  settings=settings, hardware=f"{platform.processor() or platform.machine()}, {a.threads} threads",
                  command="python scripts/repair_experiments.py --model " + a.model
                          + (" --calibration synth" if a.calibration == "synth" else ""))
    cells = result.setdefault("cells", {})

    def dump() -> None:
        result["wall_time_s"] = round(time.perf_counter() - t_start, 1)
        out.write_text(json.dumps(result, indent=1) + "\n")

    for crit in criteria:
        run = prune_order(model, crit, data, a, cache=out.with_name(f"{out.stem}.{crit}-scores.pt"))
        steps = run.report.steps
        live = {r: True for r in repairs}
        for rep in repairs:
            rows = cells.setdefault(f"{crit}|{rep}", {"criterion": crit, "repair": rep, "steps": []})["steps"]
            if rows and rows[-1]["accuracy_drop"] > a.stop_drop:
                live[rep] = False
        for st in steps[1:]:
            removals = run.removals(st.step)
            for rep in repairs:
                cell = cells[f"{crit}|{rep}"]
                if not live[rep] or any(r["step"] == st.step for r in cell["steps"]):
                    continue
                t0 = time.perf_counter()
                acc = round(evaluate(repaired_at(model, run, st.step, rep, data, a), test), 2)
                cell["steps"].append({
                    "step": st.step, "channels_removed": st.channels_removed, "parameters": st.parameters,
                    "flops": st.flops, "flops_reduction": round(steps[0].flops / st.flops, 4),
                    "params_reduction": round(steps[0].parameters / st.parameters, 4), "accuracy": acc,
                    "accuracy_drop": round(base_acc - acc, 2), "placement": placement(run.graph, removals),
                    "seconds": round(time.perf_counter() - t0, 1)})
                print(f"{crit:5s} {rep:16s} step {st.step:3d}  {steps[0].flops / st.flops:5.2f}x FLOPs  "
                      f"{acc:6.2f} %  ({time.perf_counter() - t0:.0f} s)", flush=True)
                live[rep] = base_acc - acc <= a.stop_drop
                dump()
            if not any(live.values()):
                break
        if not a.no_latency:
            time_steps(result, crit, run, model, a)
            dump()
    summarise(result)
    dump()
    print("wrote", out)
    return result


def time_steps(result: dict, crit: str, run, model, a: argparse.Namespace) -> None:
    """Speedup of every evaluated step of ``crit`` (one architecture per step, whatever the repair):
    batch 64 and batch 1 on the CPU, each step interleaved with the unpruned model."""
    done = sorted({r["step"] for key, c in result["cells"].items() if c["criterion"] == crit for r in c["steps"]})
    lat = result.setdefault("latency", {}).setdefault(crit, {})
    for batch in (64, 1):
        models = {"unpruned": model}
        models.update({f"step{s}": run.model_at(s) for s in done})
        t = compare_latency(models, (batch, 3, 32, 32), repeats=a.latency_repeats, threads=a.threads)
        sp = speedups(t, "unpruned")
        lat[f"batch{batch}"] = {"unpruned_ms": t["unpruned"].median_ms,
                                **{str(s): round(sp[f"step{s}"], 4) for s in done}}
    result["latency_protocol"] = (f"CPU, batch 64 and batch 1, {a.threads} threads, 3 warm-up, median of "
                                  f"{a.latency_repeats}, interleaved with the unpruned model")


def summarise(result: dict) -> None:
    """Per cell, the most-pruned step within 4 points (the issue's bar) with its measured speedups."""
    for key, cell in result["cells"].items():
        best = best_within(cell["steps"], 4.0)
        lat = result.get("latency", {}).get(cell["criterion"], {})
        cell["within_4_points"] = None if best is None else dict(
            best, speedup_batch64=lat.get("batch64", {}).get(str(best["step"])),
            speedup_batch1=lat.get("batch1", {}).get(str(best["step"])))


if __name__ == "__main__":
    main()

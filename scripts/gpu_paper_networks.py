"""The GPU machine's one prepared command for DFPC's own CIFAR-10 networks (issue 20): train the
CIFAR ResNet-50 (then ResNet-101) with the ``paper`` recipe, ship each in float16 shards, and run the
DFPC / L1 / random curves with accuracy on the full test split and the paper's GPU timing protocol.

    # on the GPU machine (the `device` tool), with the JPEG archive carried as data/cifar10-jpg.tar.gz:
    python scripts/gpu_paper_networks.py --budget-s 540 --out-dir "$OUT"

Everything is bounded by ``--budget-s`` (one command may run 10 minutes): training stops resumably
at an epoch boundary (its resume file stays on the machine, ignored by git, for the same command to
continue while the machine is still held), and the experiments stop between methods. Files written
under ``--out-dir`` mirror the repository (``data/checkpoints/paper/...``, ``data/results/...``,
``benchmarks/results/...``), each at most 15 MB (files come back at most 16 MiB each).

GPU timing (DFPC, Section 5): batch 640, 100 warm-up passes, the mean of 1,000 synchronised passes,
every pruned step within a 10-point drop timed interleaved with the unpruned model.

On a machine with several GPUs training runs under torchrun, one process per GPU (NCCL,
DistributedDataParallel; ``--nproc``, default the GPU count): the paper's global batch of 128 and lr
0.1 are split among the processes, BatchNorm synchronised, so the recipe is the same as on one GPU
(see ``docs/multi_gpu.md``). The launch is ``python -m torch.distributed.run`` (torchrun) with the
``python -m pruning_lib.train`` command that :func:`~pruning_lib.course.training.retrain_command`
writes for the recipe.

Tested on the CPU on tiny settings (``tests/test_gpu_script.py``): ``--archs resnet20 --epochs 1
--train-subset 640 --device cpu --test-subset 200 --gpu-batch 8 --gpu-warmup 1 --gpu-repeats 2``
on the course's data (about a minute).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dfpc_experiments  # noqa: E402  (scripts/, beside this file)

from pruning_lib.course import data as cdata  # noqa: E402
from pruning_lib.course.checkpoints import load_checkpoint  # noqa: E402
from pruning_lib.measure import compare_latency, count_flops, speedups  # noqa: E402
from pruning_lib.course.training import evaluate, recipe_config, retrain_command, train  # noqa: E402

SHARD_MB = 15.0


def ensure_data(data_dir: Path) -> None:
    """Decode the carried JPEG archive once, if this machine has no cache yet."""
    if not list((data_dir / "cache").glob("cifar10-jpeg.pt")):
        cdata.prepare(data_dir, source=data_dir / "cifar10-jpg.tar.gz")


def ship(path: Path, out_dir: Path) -> list[str]:
    """Copy a checkpoint (its index and shards) to ``out_dir/data/checkpoints/paper/``."""
    dest = out_dir / "data" / "checkpoints" / "paper"
    dest.mkdir(parents=True, exist_ok=True)
    files = [path] + sorted(path.parent.glob(path.name + ".shard-*"))
    for f in files:
        shutil.copy2(f, dest / f.name)
    return [str(dest / f.name) for f in files]


def processes(a: argparse.Namespace) -> int:
    """How many training processes: ``--nproc``, else one per GPU on CUDA, else 1."""
    if a.nproc is not None:
        if a.nproc < 1:
            raise SystemExit(f"--nproc {a.nproc}: give 1 or more processes")
        return a.nproc
    return torch.cuda.device_count() if torch.device(a.device).type == "cuda" else 1


def torchrun_command(cfg, out: Path, nproc: int, budget_s: float, a: argparse.Namespace) -> list[str]:
    """``torchrun --standalone --nproc-per-node <nproc> -m pruning_lib.train ...`` for ``cfg`` (the
    recipe's own command line, from ``retrain_command``) with the budget, shards, device and compile
    backend of this script; torchrun is run as ``python -m torch.distributed.run`` of this Python."""
    train_args = shlex.split(retrain_command(cfg, "OUT"))[3:]        # drop "python -m pruning_lib.train"
    train_args[train_args.index("--out") + 1] = str(out)               # any path, spaces included
    train_args += [f"--budget-s={max(budget_s, 0.0):.0f}", "--shard-mb", f"{SHARD_MB:g}", "--device", a.device]
    if a.compile:
        train_args += ["--compile", a.compile]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "pruning_lib.train"] + train_args


def launch(cmd: list[str]) -> int:
    """Run ``cmd`` from the repository root (its output goes to this script's); its exit status."""
    print("$ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def run_summary(out: Path) -> dict:
    """What a training run into ``out`` left: finished (its checkpoint, no resume file) with its test
    accuracy, or stopped at an epoch (its resume file)."""
    resume = out.with_name(out.name + ".resume.pt")
    if resume.exists():
        r = torch.load(resume, map_location="cpu", weights_only=True)
        return {"finished": False, "epochs": r["epoch"], "test_accuracy": None,
                "wall_time_s": round(r["wall_time_s"], 1)}
    if out.exists():
        _, meta = load_checkpoint(out)
        return {"finished": True, "epochs": meta["epochs"], "test_accuracy": meta["test_accuracy"],
                "wall_time_s": meta["wall_time_s"]}
    return {"finished": False, "epochs": 0, "test_accuracy": None, "wall_time_s": 0.0}


def gpu_timing(models: dict, a: argparse.Namespace) -> dict[str, dict]:
    """The paper's GPU protocol on ``models`` (first one the baseline): mean latency and speedup."""
    lat = compare_latency(models, (a.gpu_batch, 3, 32, 32), warmup=a.gpu_warmup, repeats=a.gpu_repeats,
                          device=a.device)
    sp = speedups(lat, next(iter(models)), statistic="mean")
    return {k: {"mean_ms": lat[k].mean_ms, "median_ms": lat[k].median_ms, "speedup": round(sp[k], 4)}
            for k in models}


def experiments(arch: str, a: argparse.Namespace, deadline: float, out_dir: Path) -> dict:
    """DFPC (coupled / non-coupled), L1 and random curves of the shipped paper-recipe ``arch``."""
    path = a.checkpoint_dir / f"{arch}.pt"
    model, meta = load_checkpoint(path, arch=arch)
    dev = torch.device(a.device)
    model = model.to(dev)
    test = dfpc_experiments.accuracy_split(a.test_subset, copy=meta.get("data_copy"))
    ns = dfpc_experiments.parser().parse_args(
        ["--model", f"paper/{arch}", "--test-subset", str(a.test_subset), "--step-fraction", str(a.step_fraction),
         "--stop-drop", str(a.stop_drop), "--device", a.device])
    result = {"model": f"paper/{arch}", "checkpoint_test_accuracy": meta["test_accuracy"],
              "accuracy_split": test.name, "accuracy_device": a.device, "recipe": meta["recipe"],
              "gpu_protocol": f"batch {a.gpu_batch}, {a.gpu_warmup} warm-up, mean of {a.gpu_repeats} "
                              "synchronised passes, interleaved with the unpruned model",
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "settings": vars(ns), "methods": {}, "complete": False}
    dest = out_dir / "data" / "results" / f"dfpc_paper_{arch}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    for label in a.methods.split(","):
        if time.perf_counter() > deadline:
            print(f"out of time before {label}", flush=True)
            break
        r = dfpc_experiments.prune_curve(model, label, ns, test)
        rows = r.report.rows()
        timed = [row["step"] for row in rows[1:] if row["accuracy_drop"] is not None
                 and row["accuracy_drop"] <= a.time_within]
        models = {"unpruned": r.original.to(dev), **{f"step{t}": r.model_at(t).to(dev) for t in timed}}
        timing = gpu_timing(models, a)
        for row in rows:
            t = timing.get("unpruned" if row["step"] == 0 else f"step{row['step']}")
            row["gpu_speedup"] = None if t is None else t["speedup"]
            row["gpu_mean_ms"] = None if t is None else t["mean_ms"]
        result["methods"][label] = {"criterion": r.scores.method, "coupled": r.report.info["coupled"],
                                    "stop_reason": r.stop_reason, "steps": rows}
        dest.write_text(json.dumps(result, indent=1))
        print(r.report.table(), flush=True)
    result["complete"] = len(result["methods"]) == len(a.methods.split(","))
    result["flops_unpruned"] = count_flops(model.cpu(), (1, 3, 32, 32))
    dest.write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default="cifar_resnet50,cifar_resnet101")
    p.add_argument("--budget-s", type=float, default=540.0, help="the whole command's time budget")
    p.add_argument("--out-dir", type=Path, required=True, help="where shipped files go ($OUT on the device)")
    p.add_argument("--checkpoint-dir", type=Path, default=ROOT / "data" / "checkpoints" / "paper",
                   help="where training writes (resume files stay here between commands)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=None, help="default: the paper recipe's 200")
    p.add_argument("--train-subset", type=int, default=None, help="tiny dry runs only")
    p.add_argument("--compile", default=None, help="torch.compile backend for training (default eager)")
    p.add_argument("--nproc", type=int, default=None,
                   help="training processes (torchrun when more than 1); default: one per GPU on CUDA, else 1")
    p.add_argument("--bench", action="store_true", help="run benchmarks/train_throughput.py first")
    p.add_argument("--test-subset", type=int, default=0, help="accuracy images (0: all 10,000)")
    p.add_argument("--methods", default=",".join(dfpc_experiments.METHODS))
    p.add_argument("--step-fraction", type=float, default=0.02)
    p.add_argument("--stop-drop", type=float, default=30.0)
    p.add_argument("--time-within", type=float, default=10.0, help="time every step within this drop")
    p.add_argument("--gpu-batch", type=int, default=640)
    p.add_argument("--gpu-warmup", type=int, default=100)
    p.add_argument("--gpu-repeats", type=int, default=1000)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    deadline = t0 + a.budget_s
    data_dir = cdata.default_data_dir()
    ensure_data(data_dir)
    summary: dict = {"trained": {}, "experiments": {}}
    if a.bench:
        import train_throughput
        bench = a.out_dir / "benchmarks" / "results" / "train_throughput.json"
        bench.parent.mkdir(parents=True, exist_ok=True)
        train_throughput.main(["--device", a.device, "--json", str(bench)])
    for arch in a.archs.split(","):
        cfg = recipe_config("paper", arch=arch, epochs=a.epochs, train_subset=a.train_subset)
        out = a.checkpoint_dir / f"{arch}.pt"
        if not out.exists():
            left = deadline - time.perf_counter() - 30.0          # room to evaluate and save
            nproc = processes(a)
            if nproc > 1:                                          # one process per GPU, through torchrun
                status = launch(torchrun_command(cfg, out, nproc, left, a))
                summary["trained"][arch] = {**run_summary(out), "processes": nproc, "exit_status": status}
                if status != 0:
                    raise SystemExit(f"training {arch} on {nproc} processes failed (exit status {status}); "
                                     "its output is above, its resume file (if any) beside " + str(out))
            else:
                r = train(cfg, out, device=a.device, compile=a.compile or False, budget_s=left, shard_mb=SHARD_MB)
                summary["trained"][arch] = {"finished": r.finished, "epochs": r.epochs, "test_accuracy": r.test_accuracy,
                                            "wall_time_s": round(r.wall_time_s, 1), "processes": 1}
            if not summary["trained"][arch]["finished"]:
                break                                              # the next command continues it
        summary["trained"].setdefault(arch, {"finished": True, "existing": True})
        summary["trained"][arch]["files"] = ship(out, a.out_dir)
        if time.perf_counter() < deadline:
            res = experiments(arch, a, deadline, a.out_dir)
            summary["experiments"][arch] = {"complete": res["complete"], "methods": list(res["methods"])}
    summary["wall_time_s"] = round(time.perf_counter() - t0, 1)
    (a.out_dir / "gpu_paper_networks.json").parent.mkdir(parents=True, exist_ok=True)
    (a.out_dir / "gpu_paper_networks.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()

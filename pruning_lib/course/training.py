"""Training, evaluation and short fine-tuning of CIFAR-10 models.

Two named recipes (:data:`RECIPES`), chosen with ``--recipe``:

- ``course`` (the shipped networks'): SGD with Nesterov momentum, a one-cycle learning-rate schedule,
  label smoothing 0.1, no weight decay on BatchNorm parameters and biases, optional Cutout;
- ``paper`` (DFPC's appendix, the usual CIFAR recipe): SGD, lr 0.1, momentum 0.9, weight decay 5e-4
  on every parameter (BatchNorm included), a cosine schedule over 200 epochs, batch 128, no label
  smoothing, no Cutout.

Both use per-sample random crop (pad 4) and flip on tensors, channels_last memory layout and CUDA
when present. Training writes a resume file after every epoch and picks it up again when restarted
with the same output; the recipe's name is recorded in the checkpoint (``meta["recipe"]["name"]``).

Command: ``python -m pruning_lib.train --recipe paper --arch resnet20 --out data/checkpoints/paper/resnet20.pt``
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data as cdata
from ..measure.accuracy import evaluate
from .checkpoints import save_checkpoint
from .models import get_model


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


HALF_ABOVE_PARAMS = 5_000_000
"""Networks with more parameters than this are stored in float16: the final checkpoint and the resume
file (weights and momentum), so an over-parameterised run's resume file stays small enough to commit."""


def _halved(obj):
    """``obj`` (nested dicts/lists of tensors) with every floating tensor cast to float16."""
    if isinstance(obj, torch.Tensor):
        return obj.half() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _halved(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_halved(v) for v in obj)
    return obj


SCHEDULES = ("onecycle", "cosine")


@dataclass
class TrainConfig:
    """Hyper-parameters of a CIFAR training run; the defaults are the ``course`` recipe."""
    arch: str = "resnet20"
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.2                 # peak of the one-cycle schedule, or the start of the cosine one
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0
    num_classes: int = 10
    train_subset: int | None = None   # images of the train split to use (smoke tests)
    amp: bool = True                  # bfloat16 autocast for the forward pass (about 2x on a CPU with bf16)
    cutout: int = 0                   # Cutout square side in pixels (0: off; 16 is the usual CIFAR value)
    name: str = "course"              # the recipe's name (a key of RECIPES, or "<key>, modified: ...")
    schedule: str = "onecycle"        # learning-rate schedule, one of SCHEDULES (per step)
    nesterov: bool = True
    decay_norm: bool = False          # weight decay on BatchNorm parameters and biases too

    def validate(self) -> "TrainConfig":
        """Raise a ValueError naming the bad setting; return ``self`` when every setting is usable.

        Called before any data is loaded, so a mistyped command fails in a second, not after the
        185 MB training split has been read."""
        def bad(what, fix):
            raise ValueError(f"TrainConfig: {what}; {fix}")
        for k in ("epochs", "batch_size", "num_classes"):
            if not isinstance(getattr(self, k), int) or isinstance(getattr(self, k), bool) or getattr(self, k) < 1:
                bad(f"{k}={getattr(self, k)!r} is not a positive whole number", f"pass --{k.replace('_', '-')} 1 or more")
        if self.train_subset is not None and (isinstance(self.train_subset, bool) or not isinstance(self.train_subset, int)
                                              or self.train_subset < self.batch_size):
            bad(f"train_subset={self.train_subset!r} is fewer images than one batch ({self.batch_size})",
                "leave it out to train on the whole split, or give at least --batch-size images")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            bad(f"lr={self.lr!r} must be a positive number", "e.g. --lr 0.1")
        if not 0 <= self.momentum < 1:
            bad(f"momentum={self.momentum!r} must be in [0, 1)", "the recipes use 0.9")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad(f"weight_decay={self.weight_decay!r} must be 0 or more", "the recipes use 5e-4")
        if not 0 <= self.label_smoothing < 1:
            bad(f"label_smoothing={self.label_smoothing!r} must be in [0, 1)", "use 0 for none")
        if not 0 <= self.cutout <= 32:
            bad(f"cutout={self.cutout!r} does not fit a 32x32 image", "use 0 (off) to 32; 16 is usual")
        if self.schedule not in SCHEDULES:
            bad(f"schedule={self.schedule!r} is not one of {SCHEDULES}", "pick one of those")
        if self.nesterov and self.momentum == 0:
            bad("Nesterov momentum needs momentum > 0", "set nesterov=False or a momentum")
        return self


RECIPES: dict[str, TrainConfig] = {
    "course": TrainConfig(),
    # DFPC, Appendix (training details of the CIFAR-10 networks): SGD, lr 0.1, momentum 0.9,
    # weight decay 5e-4, cosine annealing over 200 epochs, batch 128, crop and flip.
    "paper": TrainConfig(name="paper", epochs=200, lr=0.1, momentum=0.9, weight_decay=5e-4,
                         label_smoothing=0.0, cutout=0, schedule="cosine", nesterov=False,
                         decay_norm=True),
}
"""The named training recipes: ``course`` (the shipped networks') and ``paper`` (DFPC's appendix)."""

RECIPE_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing", "cutout",
                 "schedule", "nesterov", "decay_norm")
"""The fields that make a recipe; arch, seed, subset, amp and the class count are the run's own."""

RECIPE_FIXED: dict[str, tuple[str, ...]] = {
    "course": ("momentum", "weight_decay", "label_smoothing", "schedule", "nesterov", "decay_norm"),
    "paper": RECIPE_FIELDS,
}
"""What each recipe pins: the course's networks vary epochs, batch, lr and Cutout within the recipe;
the paper's recipe is all of its fields, so ``--recipe paper --epochs 2`` is named as modified."""


def recipe_config(name: str, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name`` with ``overrides``; a recipe field that differs
    from the preset is named in the config's ``name`` (``"paper, modified: lr"``), so a checkpoint
    never claims a recipe it was not trained with."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; the recipes are {sorted(RECIPES)}")
    unknown = sorted(set(overrides) - set(TrainConfig.__dataclass_fields__) - {"name"})
    if unknown:
        raise ValueError(f"TrainConfig has no fields {unknown}")
    base = RECIPES[name]
    cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    changed = [k for k in RECIPE_FIXED[name] if getattr(cfg, k) != getattr(base, k)]
    return dataclasses.replace(cfg, name=name + (", modified: " + ", ".join(changed) if changed else ""))


@dataclass
class TrainResult:
    """A training run's outcome; ``finished`` is False when it stopped at its time budget, leaving
    its resume file (``checkpoint``) for the same command to continue, and no test accuracy."""
    checkpoint: Path
    test_accuracy: float | None
    epochs: int
    wall_time_s: float
    history: list = field(default_factory=list)
    finished: bool = True


class _OutOfTime(Exception):
    """Raised after an epoch's resume file is written when the next epoch would pass the budget."""


def _make_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """SGD and its per-step schedule for ``cfg``; BatchNorm parameters and biases (``ndim <= 1``)
    are decayed only when the recipe says so (``decay_norm``: the paper's recipe)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if cfg.decay_norm or p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    else:
        # OneCycleLR divides by its warm-up length, 0.25 * total - 1 steps: 4 steps or fewer divide by <= 0
        if 0.25 * total - 1 <= 0:
            raise ValueError(f"TrainConfig: a one-cycle schedule of {total} steps is too short ({cfg.epochs} "
                             f"epochs x {steps_per_epoch} steps); train on more images or epochs, or use "
                             "schedule='cosine'")
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.25,
                                                    div_factor=10.0, final_div_factor=200.0)
    return opt, sched


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt, sched, label_smoothing: float,
               device: torch.device, amp: bool = False) -> torch.Tensor:
    """One SGD step on a batch (channels_last, bfloat16 autocast when ``amp``); returns the loss as a
    tensor on the device, so a loop that only accumulates it never waits for the device."""
    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    y = y.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    return loss.detach()


def train_epochs(model: nn.Module, split: cdata.CIFAR10Split, epochs: int, opt, sched,
                 label_smoothing: float, generator: torch.Generator, device: torch.device,
                 start_epoch: int = 0, batch_size: int = 128, on_epoch_end=None,
                 desc: str = "train", amp: bool = False, cutout: int = 0) -> list[dict]:
    """The inner loop shared by training and fine-tuning; returns one record per epoch."""
    history = []
    steps = len(split) // batch_size
    for epoch in range(start_epoch, epochs):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        bar = tqdm(cdata.batches(split, batch_size, shuffle=True, train_augment=True,
                                 generator=generator, drop_last=True, cutout_size=cutout),
                   total=steps, desc=f"{desc} {epoch + 1}/{epochs}", leave=False)
        for x, y in bar:
            loss = train_step(model, x, y, opt, sched, label_smoothing, device, amp)
            total += loss.float() * len(y)               # stays on the device: no sync per step
            n += len(y)
            if n % (50 * batch_size) == 0:
                bar.set_postfix(loss=f"{float(total) / n:.3f}")
        record = {"epoch": epoch + 1, "loss": float(total) / max(n, 1), "seconds": time.perf_counter() - t0}
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return history


def split_fingerprint(split: cdata.CIFAR10Split) -> str:
    """``"<copy>:<sha256 prefix>"`` of a split's images and labels: which images a run trained on,
    so a resumed run can refuse another data copy or subset."""
    h = hashlib.sha256()
    h.update(split.x.cpu().contiguous().numpy().tobytes())
    h.update(split.y.cpu().contiguous().numpy().tobytes())
    return f"{split.copy}:{h.hexdigest()[:16]}"


def train(cfg: TrainConfig, out: str | Path, device: str | torch.device | None = None,
          data_dir: str | Path | None = None, resume: bool = True,
          compile: bool | str = False, overwrite: bool = False,
          budget_s: float | None = None, shard_mb: float | None = None) -> TrainResult:
    """Train ``cfg.arch`` on the ``train`` split; write the final checkpoint to ``out``.

    A resume file ``<out>.resume.pt`` (model, optimiser, schedule, RNG, history, and a fingerprint of
    the training images) is written after each epoch; a later call with the same ``out`` continues
    from it, then deletes it. An existing ``out`` with no resume file is a finished run: it is
    overwritten only when ``overwrite`` is given. ``cfg`` is validated before any data is loaded.
    ``budget_s``: stop after the epoch at which another epoch (as long as the slowest so far) would
    pass this many seconds of this call, keeping the resume file (for a machine lent by the minute).
    ``shard_mb``: write the final checkpoint in shards of at most that size (see ``save_checkpoint``).
    ``compile`` runs the training steps through ``torch.compile`` (True, or a backend name); it is
    not part of the recipe, so a run may switch it between resumes. The default backend needs a C++
    compiler on a CPU and pays about a minute up front.
    """
    out = Path(out)
    cfg.validate()
    resume_path = out.with_name(out.name + ".resume.pt")
    if out.exists() and not (resume and resume_path.exists()) and not overwrite:
        raise FileExistsError(f"{out} exists and there is no run to resume beside it; training again would "
                              "overwrite it: pass overwrite=True (--overwrite) or another --out")
    device = torch.device(device) if device else default_device()
    torch.manual_seed(cfg.seed)
    split = cdata.load_split("train", data_dir)
    if cfg.train_subset:
        if cfg.train_subset > len(split):
            raise ValueError(f"TrainConfig: train_subset={cfg.train_subset} is more than the {len(split)} "
                             "images of the train split; leave it out to use them all")
        split = split.subset(cfg.train_subset, seed=cfg.seed)
    data_id = split_fingerprint(split)
    split = split.to(device)          # on a GPU the whole split lives there: no per-batch copies
    model = get_model(cfg.arch, num_classes=cfg.num_classes).to(device).to(memory_format=torch.channels_last)
    steps = len(split) // cfg.batch_size
    opt, sched = _make_optimizer(model, cfg, steps)
    half = sum(p.numel() for p in model.parameters()) > HALF_ABOVE_PARAMS
    gen = torch.Generator().manual_seed(cfg.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, history, elapsed = 0, [], 0.0
    if resume and resume_path.exists():
        r = torch.load(resume_path, map_location="cpu", weights_only=True)   # may come from another device
        if r["config"] != asdict(cfg):
            raise ValueError(f"{resume_path} was written with another configuration {r['config']}; "
                             "delete it or train with the same settings")
        if r.get("data", data_id) != data_id:
            raise ValueError(f"{resume_path} was trained on other images ({r['data']}) than this data folder's "
                             f"train split ({data_id}); resume with the data copy it started on (--data-dir), "
                             "or delete the resume file to start again")
        model.load_state_dict(r["model"])          # float16 files are cast back to float32 here
        opt.load_state_dict(r["optimizer"])        # and here (state follows the parameters' dtype)
        sched.load_state_dict(r["scheduler"])
        gen.set_state(r["generator"])
        start, history, elapsed = r["epoch"], r["history"], r["wall_time_s"]
        print(f"resuming {cfg.arch} from epoch {start}/{cfg.epochs}")
    t_start = time.perf_counter()
    machine = hardware(device)

    def checkpoint_resume(epoch, record):
        history.append({**record, "compiled": bool(compile), "hardware": machine})
        tmp = resume_path.with_name(resume_path.name + ".tmp")
        weights, optimizer = model.state_dict(), opt.state_dict()
        if half:
            weights, optimizer = _halved(weights), _halved(optimizer)
        torch.save({"config": asdict(cfg), "data": data_id, "model": weights, "optimizer": optimizer,
                    "scheduler": sched.state_dict(), "generator": gen.get_state(), "epoch": epoch,
                    "history": history, "wall_time_s": elapsed + time.perf_counter() - t_start}, tmp)
        tmp.replace(resume_path)
        print(f"epoch {epoch}/{cfg.epochs} loss {record['loss']:.4f} ({record['seconds']:.0f} s)", flush=True)
        slowest = max(h["seconds"] for h in history[start:])
        if budget_s is not None and epoch < cfg.epochs and time.perf_counter() - t_start + slowest > budget_s:
            raise _OutOfTime

    stepper = model                               # a compiled wrapper shares the weights; saving uses ``model``
    if compile:
        stepper = torch.compile(model, **({} if compile is True else {"backend": compile}))
    try:
        train_epochs(stepper, split, cfg.epochs, opt, sched, cfg.label_smoothing, gen, device,
                     start_epoch=start, batch_size=cfg.batch_size, on_epoch_end=checkpoint_resume,
                     desc=cfg.arch, amp=cfg.amp, cutout=cfg.cutout)
    except _OutOfTime:
        print(f"stopped at epoch {history[-1]['epoch']}/{cfg.epochs}: the next epoch would pass the "
              f"{budget_s:.0f} s budget; the same command continues from {resume_path}", flush=True)
        return TrainResult(resume_path, None, history[-1]["epoch"], elapsed + time.perf_counter() - t_start,
                           history, finished=False)
    wall = elapsed + time.perf_counter() - t_start
    test = cdata.load_split("test", data_dir)
    acc = evaluate(model, test, device=device)
    meta = {"dataset": "CIFAR-10", "data_copy": test.copy, "test_accuracy": acc, "epochs": cfg.epochs,
            "recipe": asdict(cfg), "wall_time_s": round(wall, 1), "hardware": hardware_summary(history, machine),
            "seed": cfg.seed, "train_images": len(split), "history": history}
    save_checkpoint(out, model.cpu().to(memory_format=torch.contiguous_format), cfg.arch, meta,
                    half=half, shard_mb=shard_mb)
    resume_path.unlink(missing_ok=True)
    return TrainResult(out, acc, cfg.epochs, wall, history)


def fine_tune(model: nn.Module, epochs: int = 1, lr: float = 0.01, batch_size: int = 128,
              label_smoothing: float = 0.1, weight_decay: float = 5e-4, seed: int = 0,
              split: cdata.CIFAR10Split | str = "train", device: str | torch.device | None = None,
              inplace: bool = False, amp: bool = True) -> nn.Module:
    """A short fine-tune (a few epochs, cosine schedule from ``lr``) of a copy of ``model``."""
    import copy
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(split, str):
        split = cdata.load_split(split)
    device = torch.device(device) if device else next(model.parameters()).device
    model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps = epochs * (len(split) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    train_epochs(model, split, epochs, opt, sched, label_smoothing, gen, device,
                 batch_size=batch_size, desc="fine-tune", amp=amp)
    model.eval()
    return model


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def hardware_summary(history: list[dict], current: str) -> str:
    """Where a run's epochs ran: ``current`` if all on one machine, else each machine with its epoch
    ranges, e.g. ``"CPU x86_64, 2 threads (epochs 1-83, 95-180); NVIDIA H200 (epochs 84-94)"``.
    Epochs recorded without a machine (resume files written before it was recorded) count as unknown."""
    spans: dict[str, list[list[int]]] = {}
    for h in history:
        name = h.get("hardware", "machine not recorded")
        runs = spans.setdefault(name, [])
        if runs and runs[-1][1] == h["epoch"] - 1:
            runs[-1][1] = h["epoch"]
        else:
            runs.append([h["epoch"], h["epoch"]])
    if set(spans) <= {current}:
        return current
    def epochs(runs):
        word = "epoch" if len(runs) == 1 and runs[0][0] == runs[0][1] else "epochs"
        return word + " " + ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)
    return "; ".join(f"{name} ({epochs(runs)})" for name, runs in spans.items())


def retrain_command(recipe: dict | TrainConfig, out: str | Path) -> str:
    """The ``python -m pruning_lib.train`` command that trains ``recipe`` (a checkpoint's
    ``meta["recipe"]`` or a :class:`TrainConfig`) from scratch into ``out``."""
    if not isinstance(recipe, TrainConfig):
        unknown = sorted(set(recipe) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"recipe has fields {unknown} that TrainConfig does not know; was it written "
                             "by a newer pruning_lib?")
    cfg = recipe if isinstance(recipe, TrainConfig) else TrainConfig(**recipe)
    preset = cfg.name.split(",")[0]
    default = RECIPES.get(preset, RECIPES["course"])
    fixed = [k for k in ("momentum", "weight_decay", "label_smoothing", "schedule", "nesterov", "decay_norm")
             if getattr(cfg, k) != getattr(default, k)] + (["num_classes"] if cfg.num_classes != 10 else [])
    if fixed:
        raise ValueError(f"the command line cannot set {fixed}; call pruning_lib.train.train() with a "
                         "TrainConfig instead")
    args = ([f"--recipe {preset}"] if preset != "course" else []) + [
        f"--arch {cfg.arch}", f"--epochs {cfg.epochs}", f"--batch-size {cfg.batch_size}",
        f"--lr {cfg.lr:g}", f"--seed {cfg.seed}"]
    if cfg.cutout:
        args.append(f"--cutout {cfg.cutout}")
    if cfg.train_subset:
        args.append(f"--train-subset {cfg.train_subset}")
    if not cfg.amp:
        args.append("--no-amp")
    return "python -m pruning_lib.train " + " ".join(args) + f" --out {out}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pruning_lib.train", description=__doc__.split("\n")[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="course",
                   help="named recipe whose settings the other options override (default: course)")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (course 60, paper 200)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (128)")
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's (course 0.2, paper 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="final checkpoint path (resume file beside it)")
    p.add_argument("--device", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--no-amp", action="store_true", help="train in float32 (no bfloat16 autocast)")
    p.add_argument("--cutout", type=int, default=None, help="Cutout square size (0: off; default: the recipe's, 0)")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (not part of the recipe; needs a C++ compiler on a CPU)")
    p.add_argument("--overwrite", action="store_true", help="retrain even if --out holds a finished checkpoint")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop (resumably) before this many seconds pass; rerun the command to continue")
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` that the command line ``a`` (parsed by :func:`_parser`) asks for."""
    return recipe_config(a.recipe, arch=a.arch, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                         seed=a.seed, train_subset=a.train_subset, amp=not a.no_amp, cutout=a.cutout)


def main(argv=None) -> None:
    p = _parser()
    a = p.parse_args(argv)
    try:
        cfg = config_from_args(a).validate()
    except ValueError as e:
        p.error(str(e))
    r = train(cfg, a.out, a.device, a.data_dir, compile=a.compile, overwrite=a.overwrite, budget_s=a.budget_s)
    if r.finished:
        print(f"{cfg.arch}: test accuracy {r.test_accuracy:.2f}% after {r.epochs} epochs "
              f"({r.wall_time_s / 60:.1f} min) -> {r.checkpoint}")



__all__ = ["RECIPES", "TrainConfig", "TrainResult", "recipe_config", "train", "train_step", "train_epochs",
           "fine_tune", "evaluate", "retrain_command", "default_device", "split_fingerprint", "hardware",
           "hardware_summary", "config_from_args", "main"]


if __name__ == "__main__":
    main()

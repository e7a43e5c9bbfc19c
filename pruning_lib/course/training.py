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

On several processes (GPUs, or CPU processes with gloo) the same command runs under torchrun, with
DistributedDataParallel: ``torchrun --standalone --nproc-per-node 4 -m pruning_lib.train --recipe paper ...``.
``--batch-size`` and ``--lr`` are then still the *global* batch and its learning rate: each of the N
processes computes ``batch_size / N`` images of every global batch, and DDP averages the gradients, so
the recipe (and with ``--batchnorm sync``, the default, the BatchNorm statistics over the global batch)
is the same on any number of processes, with no learning-rate scaling to get wrong. The run's one
generator decides the order and augmentation of each global batch, identically on every rank; a
``DistributedSampler`` deals each rank its share, so N processes follow the single process's
trajectory (up to float rounding) and a resume file continues on any number of processes. Rank 0
alone writes resume files and checkpoints and evaluates the test split. See ``docs/multi_gpu.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data.distributed import DistributedSampler
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
    augment: bool = True              # random crop (pad 4) and flip per image (False: the images as they are)

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
        if self.cutout and not self.augment:
            bad(f"cutout={self.cutout} asks for augmentation that augment=False turns off",
                "drop --cutout or --no-augment")
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
                 "schedule", "nesterov", "decay_norm", "augment")
"""The fields that make a recipe; arch, seed, subset, amp and the class count are the run's own."""

RECIPE_FIXED: dict[str, tuple[str, ...]] = {
    "course": ("momentum", "weight_decay", "label_smoothing", "schedule", "nesterov", "decay_norm", "augment"),
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


@dataclass(frozen=True)
class DistContext:
    """This process's place in a launch: ``world_size`` processes (1: a plain run), its ``rank``
    (0 writes files) and ``local_rank`` (its GPU on this machine); ``backend`` is ``None`` without a
    process group, and ``owns_group`` says that :func:`train` made the group and so tears it down."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def from_writer(self, value):
        """``value`` as rank 0 has it (a broadcast, so also a barrier); ``value`` itself on one process."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not a whole number; launch with torchrun, "
                         "which sets RANK, LOCAL_RANK and WORLD_SIZE") from None


def launch_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``), 1 outside torchrun."""
    world = _env_int("WORLD_SIZE")
    if world is not None and world < 1:
        raise ValueError(f"environment variable WORLD_SIZE={world} must be 1 or more; launch with torchrun")
    return world or 1


def init_distributed(device: torch.device | None = None, timeout_s: float = 1800.0
                     ) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``); return this process's :class:`DistContext` and device.

    Outside torchrun, or with one process, there is no group: ``(DistContext(), device)``. On CUDA each
    process takes the GPU of its ``LOCAL_RANK`` (one process per GPU) and the group uses NCCL; on a CPU
    it uses gloo. ``timeout_s`` bounds every collective, so a rank whose peer died stops with an error
    instead of waiting forever (torchrun also stops the other ranks as soon as one fails)."""
    world = launch_world_size()
    device = torch.device(device) if device is not None else default_device()
    if world == 1:
        return DistContext(), device
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or local is None:
        raise ValueError(f"WORLD_SIZE={world} but RANK or LOCAL_RANK is not set; launch with "
                         "`torchrun --nproc-per-node N -m pruning_lib.train ...`")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPU(s): "
                             "one process per GPU, so pass --nproc-per-node at most the GPU count")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if dist.is_initialized():                      # the caller made the group: use it, leave it to them
        return DistContext(rank, world, local, dist.get_backend(), owns_group=False), device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world, local, backend, owns_group=True), device


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: each rank's input feeds every
    rank's output, so its gradient collects every rank's upstream gradient."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across the process group.

    ``torch.nn.SyncBatchNorm`` does this on GPUs (and is used there); it refuses CPU tensors, so CPU
    processes (gloo) use this one: mean, then variance around it, each summed over the ranks by a
    differentiable all-reduce, so the gradient is that of BatchNorm over the whole global batch. The
    parameters and buffers are BatchNorm2d's, so checkpoints load into the plain network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        xf = x if x.dtype == torch.float64 else x.float()
        dims = (0, 2, 3)
        stats = all_reduce(torch.cat([xf.sum(dims), xf.new_tensor([x.numel() / x.shape[1]])]))
        n = stats[-1]
        mean = stats[:-1] / n
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dims)) / n                     # biased, as BatchNorm normalises
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))   # unbiased, as BatchNorm
        return y.to(x.dtype)


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm2d computing statistics over the global batch: PyTorch's
    ``SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm2d` elsewhere (same parameters, same keys).
    Modules are replaced in place (same names, same order), so optimiser state still lines up."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        return new.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, global_batchnorm(child, device))
    return module


def train_epochs(model: nn.Module, split: cdata.CIFAR10Split, epochs: int, opt, sched,
                 label_smoothing: float, generator: torch.Generator, device: torch.device,
                 start_epoch: int = 0, batch_size: int = 128, on_epoch_end=None,
                 desc: str = "train", amp: bool = False, cutout: int = 0, augment: bool = True,
                 ctx: DistContext | None = None, dtype: torch.dtype | None = None) -> list[dict]:
    """The inner loop shared by training and fine-tuning; returns one record per epoch.

    ``batch_size`` is the global batch. With ``ctx`` of N > 1 processes every rank draws the same
    global batches from ``generator`` (same order, same crops and flips as one process would) and a
    ``DistributedSampler`` over the epoch's order deals rank r the positions r, r + N, ... of each;
    the epoch's loss is averaged over all ranks. ``dtype``: cast the images to it (a float64 model)."""
    ctx = ctx or DistContext()
    history = []
    steps = len(split) // batch_size
    per_rank = batch_size // ctx.world_size
    for epoch in range(start_epoch, epochs):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        batches = rank_batches(split, batch_size, generator, augment=augment, cutout=cutout,
                               rank=ctx.rank, world_size=ctx.world_size, epoch=epoch)
        bar = tqdm(batches, total=steps, desc=f"{desc} {epoch + 1}/{epochs}", leave=False,
                   disable=not ctx.is_writer)
        for x, y in bar:
            if dtype is not None:
                x = x.to(dtype)
            loss = train_step(model, x, y, opt, sched, label_smoothing, device, amp)
            total += loss.float() * len(y)               # stays on the device: no sync per step
            n += len(y)
            if n % (50 * per_rank) == 0:
                bar.set_postfix(loss=f"{float(total) / n:.3f}")
        if ctx.active:
            summed = torch.stack([torch.as_tensor(total, dtype=torch.float64, device=device),
                                  torch.tensor(float(n), dtype=torch.float64, device=device)])
            dist.all_reduce(summed)
            total, n = float(summed[0]), int(summed[1])
        record = {"epoch": epoch + 1, "loss": float(total) / max(n, 1), "seconds": time.perf_counter() - t0}
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return history


def rank_batches(split: cdata.CIFAR10Split, batch_size: int, generator: torch.Generator,
                 augment: bool = True, cutout: int = 0, rank: int = 0, world_size: int = 1, epoch: int = 0):
    """Process ``rank``'s batches of one training epoch, ``batch_size / world_size`` images each.

    The global batches are drawn from ``generator`` as one process draws them (shuffle, then crop,
    flip and Cutout per global batch, :func:`~pruning_lib.course.data.batches`), on every rank, so
    the generator stays the same everywhere; a ``DistributedSampler`` over the epoch's order (not
    shuffling again: the order is the generator's) deals rank r the positions r, r + N, r + 2N, ...,
    i.e. its share of each global batch. One process gets the global batches themselves."""
    batches = cdata.batches(split, batch_size, shuffle=True, train_augment=augment, generator=generator,
                            drop_last=True, cutout_size=cutout)
    if world_size == 1:
        return batches
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} (the global batch) is not divisible by the "
                         f"{world_size} processes; pass a --batch-size that is a multiple of it")
    sampler = DistributedSampler(range(len(split)), num_replicas=world_size, rank=rank, shuffle=False,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    return _rank_share(batches, torch.tensor(list(sampler)), batch_size, batch_size // world_size)


def _rank_share(global_batches, positions: torch.Tensor, batch_size: int, per_rank: int):
    """The images at the sampler's ``positions`` (in the epoch's order) of each global batch: those
    ``k * per_rank ... (k + 1) * per_rank - 1`` of the list lie in global batch ``k``."""
    for k, (x, y) in enumerate(global_batches):
        pos = (positions[k * per_rank:(k + 1) * per_rank] - k * batch_size).to(x.device)
        yield x[pos], y[pos.to(y.device)]


def split_fingerprint(split: cdata.CIFAR10Split) -> str:
    """``"<copy>:<sha256 prefix>"`` of a split's images and labels: which images a run trained on,
    so a resumed run can refuse another data copy or subset."""
    h = hashlib.sha256()
    h.update(split.x.cpu().contiguous().numpy().tobytes())
    h.update(split.y.cpu().contiguous().numpy().tobytes())
    return f"{split.copy}:{h.hexdigest()[:16]}"


def saved_config(config: dict) -> dict:
    """A resume file's ``config`` with the fields it predates filled with their defaults (a file
    written before ``augment`` existed trained with augmentation), to compare with ``asdict(cfg)``."""
    return {**asdict(TrainConfig()), **config}


BATCHNORM_MODES = ("sync", "local")
"""``sync``: BatchNorm statistics over the global batch (SyncBatchNorm), the same recipe on any
number of processes; ``local``: each process's own share (no communication in the forward pass)."""


def distributed_summary(ctx: DistContext, cfg: TrainConfig, batchnorm: str) -> dict:
    """What a run's processes shared: world size, backend, global and per-process batch, the lr (of
    the global batch) and where BatchNorm takes its statistics; recorded as ``meta["distributed"]``."""
    per = cfg.batch_size // ctx.world_size
    if not ctx.active:
        bn = "over the batch (one process)"
    elif batchnorm == "sync":
        bn = f"over the global batch of {cfg.batch_size} (synchronised across processes)"
    else:
        bn = f"per process, over its {per} images"
    return {"world_size": ctx.world_size, "backend": ctx.backend, "global_batch": cfg.batch_size,
            "per_process_batch": per, "lr": cfg.lr, "lr_is_for": "the global batch",
            "batchnorm": bn, "sync_batchnorm": bool(ctx.active and batchnorm == "sync")}


def _machine(ctx: DistContext, device: torch.device) -> str:
    """This run's machine: ``hardware(device)`` for one process, ``"4 x NVIDIA H200"`` for several."""
    here = hardware(device)
    if not ctx.active:
        return here
    names = [None] * ctx.world_size
    dist.all_gather_object(names, here)
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    return " + ".join(f"{c} x {name}" for name, c in counts.items())


def train(cfg: TrainConfig, out: str | Path, device: str | torch.device | None = None,
          data_dir: str | Path | None = None, resume: bool = True,
          compile: bool | str = False, overwrite: bool = False,
          budget_s: float | None = None, shard_mb: float | None = None,
          batchnorm: str = "sync", dist_timeout_s: float = 1800.0, float64: bool = False) -> TrainResult:
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

    Under torchrun (``WORLD_SIZE`` > 1) the processes train one model with DistributedDataParallel:
    ``cfg.batch_size`` and ``cfg.lr`` are the global batch and its learning rate, split evenly among
    the processes (see :func:`train_epochs`); ``batchnorm`` (:data:`BATCHNORM_MODES`) says whether
    BatchNorm normalises over the global batch (``sync``) or each process's share (``local``). Rank 0
    alone writes the resume file (the others wait for it) and the checkpoint, and evaluates; a resume
    file continues on any number of processes, since it holds the global state only. Every rank
    returns the same :class:`TrainResult`. ``dist_timeout_s`` bounds every collective.
    ``float64`` trains in double precision (slow; not part of the recipe): runs that should agree,
    e.g. on different numbers of processes, then agree to far below float32's rounding, which the
    backward pass of a deep BatchNorm network at initialisation amplifies by orders of magnitude.
    """
    out = Path(out)
    cfg.validate()
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm={batchnorm!r} is not one of {BATCHNORM_MODES}")
    if float64 and cfg.amp:
        raise ValueError("float64=True with amp=True: bfloat16 autocast would undo double precision; "
                         "pass --no-amp with --float64")
    world = launch_world_size()
    if cfg.batch_size % world:
        raise ValueError(f"TrainConfig: batch_size={cfg.batch_size} is the global batch and must split evenly "
                         f"among the {world} processes; pass a --batch-size that is a multiple of {world}")
    resume_path = out.with_name(out.name + ".resume.pt")
    if out.exists() and not (resume and resume_path.exists()) and not overwrite:
        raise FileExistsError(f"{out} exists and there is no run to resume beside it; training again would "
                              "overwrite it: pass overwrite=True (--overwrite) or another --out")
    ctx, device = init_distributed(device, dist_timeout_s)
    # On an error this process leaves without tearing the group down (its peers may be inside a
    # collective, where a teardown could wait on them): torchrun stops the other ranks as soon as one
    # exits with an error, and a collective that never completes fails after ``dist_timeout_s``.
    result = _train(cfg, out, resume_path, ctx, device, data_dir, resume, compile, budget_s, shard_mb, batchnorm,
                    float64)
    if ctx.owns_group:
        dist.destroy_process_group()
    return result


def _train(cfg, out, resume_path, ctx, device, data_dir, resume, compile, budget_s, shard_mb, batchnorm, float64):
    torch.manual_seed(cfg.seed)
    if not ctx.is_writer:
        ctx.barrier()                 # rank 0 decodes the data first if there is no cache yet
    split = cdata.load_split("train", data_dir)
    if ctx.is_writer:
        ctx.barrier()
    if cfg.train_subset:
        if cfg.train_subset > len(split):
            raise ValueError(f"TrainConfig: train_subset={cfg.train_subset} is more than the {len(split)} "
                             "images of the train split; leave it out to use them all")
        split = split.subset(cfg.train_subset, seed=cfg.seed)
    data_id = split_fingerprint(split)
    split = split.to(device)          # on a GPU the whole split lives there: no per-batch copies
    model = get_model(cfg.arch, num_classes=cfg.num_classes).to(device).to(memory_format=torch.channels_last)
    if float64:
        model = model.double()
    if ctx.active and batchnorm == "sync":
        model = global_batchnorm(model, device)           # before the optimiser sees the parameters
    steps = len(split) // cfg.batch_size
    opt, sched = _make_optimizer(model, cfg, steps)
    half = sum(p.numel() for p in model.parameters()) > HALF_ABOVE_PARAMS
    gen = torch.Generator().manual_seed(cfg.seed)
    if ctx.is_writer:
        out.parent.mkdir(parents=True, exist_ok=True)
    start, history, elapsed = 0, [], 0.0
    if resume and resume_path.exists():
        r = torch.load(resume_path, map_location="cpu", weights_only=True)   # may come from another device
        if saved_config(r["config"]) != asdict(cfg):
            raise ValueError(f"{resume_path} was written with another configuration {r['config']}; "
                             "delete it or train with the same settings")
        if r.get("data", data_id) != data_id:
            raise ValueError(f"{resume_path} was trained on other images ({r['data']}) than this data folder's "
                             f"train split ({data_id}); resume with the data copy it started on (--data-dir), "
                             "or delete the resume file to start again")
        model.load_state_dict(r["model"])          # float16 files are cast back to float32 here
        opt.load_state_dict(r["optimizer"])        # and here (state follows the parameters' dtype)
        sched.load_state_dict(r["scheduler"])
        gen.set_state(r["generator"])              # the same on every rank: it draws the global batches
        start, history, elapsed = r["epoch"], r["history"], r["wall_time_s"]
        if ctx.is_writer:
            print(f"resuming {cfg.arch} from epoch {start}/{cfg.epochs}")
    shared = distributed_summary(ctx, cfg, batchnorm)
    if ctx.is_writer:
        procs = (f"{ctx.world_size} processes ({ctx.backend}), global batch {cfg.batch_size} = "
                 f"{ctx.world_size} x {shared['per_process_batch']} per process" if ctx.active
                 else f"1 process, batch {cfg.batch_size}")
        print(f"{cfg.arch}: {procs}, lr {cfg.lr:g} (for the global batch), BatchNorm {shared['batchnorm']}",
              flush=True)
    t_start = time.perf_counter()
    machine = _machine(ctx, device)

    def checkpoint_resume(epoch, record):
        history.append({**record, "compiled": bool(compile), "hardware": machine, "world_size": ctx.world_size,
                        **({"float64": True} if float64 else {})})
        if ctx.is_writer:                          # one writer; the others wait at from_writer below
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
        stop = budget_s is not None and epoch < cfg.epochs and time.perf_counter() - t_start + slowest > budget_s
        if ctx.from_writer(stop):                  # rank 0 decides for all, after its file is written
            raise _OutOfTime

    stepper = model                               # a wrapper shares the weights; saving uses ``model``
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel
        stepper = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        stepper = torch.compile(stepper, **({} if compile is True else {"backend": compile}))
    try:
        train_epochs(stepper, split, cfg.epochs, opt, sched, cfg.label_smoothing, gen, device,
                     start_epoch=start, batch_size=cfg.batch_size, on_epoch_end=checkpoint_resume,
                     desc=cfg.arch, amp=cfg.amp, cutout=cfg.cutout, augment=cfg.augment, ctx=ctx,
                     dtype=torch.float64 if float64 else None)
    except _OutOfTime:
        if ctx.is_writer:
            print(f"stopped at epoch {history[-1]['epoch']}/{cfg.epochs}: the next epoch would pass the "
                  f"{budget_s:.0f} s budget; the same command continues from {resume_path}", flush=True)
        return TrainResult(resume_path, None, history[-1]["epoch"], elapsed + time.perf_counter() - t_start,
                           history, finished=False)
    wall = elapsed + time.perf_counter() - t_start
    acc = None
    if ctx.is_writer:                             # evaluated once, on the full test split, by rank 0
        test = cdata.load_split("test", data_dir)
        if float64:
            model.float()                         # evaluated and saved as every checkpoint is, in float32
        acc = evaluate(model, test, device=device)
        meta = {"dataset": "CIFAR-10", "data_copy": test.copy, "test_accuracy": acc, "epochs": cfg.epochs,
                "recipe": asdict(cfg), "wall_time_s": round(wall, 1), "hardware": hardware_summary(history, machine),
                "seed": cfg.seed, "train_images": len(split), "distributed": shared,
                "world_size": ctx.world_size, "history": history}
        save_checkpoint(out, model.cpu().to(memory_format=torch.contiguous_format), cfg.arch, meta,
                        half=half, shard_mb=shard_mb)
        resume_path.unlink(missing_ok=True)
    acc = ctx.from_writer(acc)                    # the others wait here until the checkpoint is written
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
    if not cfg.augment:
        args.append("--no-augment")
    return "python -m pruning_lib.train " + " ".join(args) + f" --out {out}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pruning_lib.train", description=__doc__.split("\n")[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="course",
                   help="named recipe whose settings the other options override (default: course)")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (course 60, paper 200)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the global batch, split evenly among torchrun's processes (default: the recipe's, 128)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of the global batch, on any number of processes "
                        "(default: the recipe's, course 0.2, paper 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="final checkpoint path (resume file beside it)")
    p.add_argument("--device", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--no-amp", action="store_true", help="train in float32 (no bfloat16 autocast)")
    p.add_argument("--no-augment", action="store_true",
                   help="no random crop and flip (a changed recipe: named as modified)")
    p.add_argument("--cutout", type=int, default=None, help="Cutout square size (0: off; default: the recipe's, 0)")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                   help="train through torch.compile, optionally with a backend name (not part of the recipe; "
                        "the default backend needs a C++ compiler on a CPU)")
    p.add_argument("--overwrite", action="store_true", help="retrain even if --out holds a finished checkpoint")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop (resumably) before this many seconds pass; rerun the command to continue")
    p.add_argument("--shard-mb", type=float, default=None,
                   help="write the final checkpoint in shards of at most this many MB")
    p.add_argument("--batchnorm", choices=BATCHNORM_MODES, default="sync",
                   help="under torchrun: BatchNorm statistics over the global batch (sync, default: the same "
                        "recipe on any number of processes) or each process's share (local)")
    p.add_argument("--float64", action="store_true",
                   help="train in double precision (slow; to check that runs meant to agree do; needs --no-amp)")
    p.add_argument("--dist-timeout-s", type=float, default=1800.0,
                   help="under torchrun: a collective waiting longer than this fails (a peer died)")
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` that the command line ``a`` (parsed by :func:`_parser`) asks for."""
    return recipe_config(a.recipe, arch=a.arch, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                         seed=a.seed, train_subset=a.train_subset, amp=not a.no_amp, cutout=a.cutout,
                         augment=False if a.no_augment else None)


def main(argv=None) -> None:
    p = _parser()
    a = p.parse_args(argv)
    try:
        cfg = config_from_args(a).validate()
        world = launch_world_size()
    except ValueError as e:
        p.error(str(e))
    if cfg.batch_size % world:
        p.error(f"--batch-size {cfg.batch_size} is the global batch and must split evenly among the {world} "
                f"processes; pass a multiple of {world}")
    if a.float64 and cfg.amp:
        p.error("--float64 needs --no-amp (bfloat16 autocast would undo double precision)")
    r = train(cfg, a.out, a.device, a.data_dir, compile=a.compile, overwrite=a.overwrite, budget_s=a.budget_s,
              shard_mb=a.shard_mb, batchnorm=a.batchnorm, dist_timeout_s=a.dist_timeout_s, float64=a.float64)
    if r.finished and int(os.environ.get("RANK", "0")) == 0:
        print(f"{cfg.arch}: test accuracy {r.test_accuracy:.2f}% after {r.epochs} epochs "
              f"({r.wall_time_s / 60:.1f} min) -> {r.checkpoint}")



__all__ = ["RECIPES", "TrainConfig", "TrainResult", "recipe_config", "train", "train_step", "train_epochs",
           "fine_tune", "evaluate", "retrain_command", "default_device", "split_fingerprint", "hardware",
           "hardware_summary", "config_from_args", "main", "DistContext", "init_distributed",
           "launch_world_size", "GlobalBatchNorm2d", "global_batchnorm", "BATCHNORM_MODES",
           "distributed_summary", "saved_config", "rank_batches"]


if __name__ == "__main__":
    main()

"""CIFAR-10 as cached uint8 tensors, with the course's fixed, class-balanced splits.

Sources (looked for in the data folder, in this order):
  * a cache file already made by :func:`prepare` (``cache/cifar10-<copy>.pt``);
  * the official python batches (``cifar-10-batches-py/``, torchvision's ``CIFAR10`` format);
  * the image-folder layout ``train|test/<class>/*.jpg|png``, as a folder or as a ``.tar.gz``.
Images are decoded once into one tensor file; every later pass costs only the model's time.

Splits of the 50,000 training images (deterministic, disjoint, class-balanced by count per class):
``train`` (for training the shipped networks), ``dist`` (labelled samples from the data distribution,
for TVSPrune's statistics) and ``val`` (for accuracy-gated pruning decisions). ``test`` is the 10,000
test images, used for every reported number.
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the official CIFAR-10 training images (standard values).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

DATA_ENV = "PRUNING_COURSE_DATA"
SPLIT_SEED = 0
DIST_PER_CLASS = 200   # 2,000 images: TVSPrune's class-conditional statistics
VAL_PER_CLASS = 200    # 2,000 images: accuracy gate for pruning decisions
SPLITS = ("train", "dist", "val", "test")
COPIES = ("official", "jpeg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DataNotFoundError(FileNotFoundError):
    """No CIFAR-10 source in the data folder; the message says what to put where."""


def default_data_dir() -> Path:
    """``$PRUNING_COURSE_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "data"


@dataclass
class CIFAR10Split:
    """One split as tensors: ``x`` uint8 (N, 3, 32, 32), ``y`` int64 (N,)."""
    name: str
    x: torch.Tensor
    y: torch.Tensor
    copy: str                      # "official" (lossless) or "jpeg" (the JPEG-compressed copy)
    classes: tuple = CLASSES

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"CIFAR10Split({self.name!r}, n={len(self)}, copy={self.copy!r})"

    def to(self, device) -> "CIFAR10Split":
        """The same split with its tensors on ``device`` (a no-op when they are there already)."""
        return CIFAR10Split(self.name, self.x.to(device), self.y.to(device), self.copy, self.classes)

    def subset(self, n: int, seed: int = 0) -> "CIFAR10Split":
        """A class-balanced subset of ``n`` images (n divisible by the class count)."""
        per_class, rest = divmod(n, len(self.classes))
        if rest:
            raise ValueError(f"subset size {n} must be a multiple of {len(self.classes)} classes")
        idx = balanced_indices(self.y, per_class, seed)
        return CIFAR10Split(f"{self.name}[{n}]", self.x[idx], self.y[idx], self.copy, self.classes)


# --------------------------------------------------------------------------- decoding sources

OFFICIAL_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def _read_official(folder: Path) -> dict:
    """The python batches (torchvision's ``CIFAR10`` format), read directly with pickle.

    Read the way torchvision reads them (``data``: uint8 rows of 3x32x32 channel planes, ``labels``),
    but without torchvision's md5 check, which refuses any copy whose bytes differ from the
    official files (re-pickled or test copies); each batch is checked for shape and labels instead.
    Like torchvision, this unpickles the files: use only batches from a source you trust.
    """
    import pickle
    meta = folder / "batches.meta"
    if meta.exists():
        with open(meta, "rb") as f:
            names = pickle.load(f, encoding="latin1").get("label_names")
        if names is not None and tuple(names) != CLASSES:
            raise ValueError(f"{meta}: label_names {names} are not CIFAR-10's classes {CLASSES}")
    out = {}
    for part, files in OFFICIAL_BATCHES.items():
        xs, ys = [], []
        for name in files:
            path = folder / name
            if not path.exists():
                raise DataNotFoundError(f"{folder}: missing {name}; the official python batches are "
                                        f"{', '.join(OFFICIAL_BATCHES['train'])} and test_batch")
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            x = np.asarray(entry["data"], dtype=np.uint8)
            y = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
                raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {x.shape} and {len(y)}")
            if len(y) and (y.min() < 0 or y.max() >= len(CLASSES)):
                raise ValueError(f"{path}: labels outside 0..{len(CLASSES) - 1}")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        out[f"{part}_x"] = torch.from_numpy(np.concatenate(xs)).contiguous()
        out[f"{part}_y"] = torch.from_numpy(np.concatenate(ys))
    return out


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape != (32, 32, 3):
        raise ValueError(f"expected 32x32 RGB CIFAR images, got shape {arr.shape}")
    return arr


def _collect(items, source: str) -> dict:
    """items: iterable of (part, class_name, file_name, bytes_getter)."""
    buckets: dict[str, list] = {"train": [], "test": []}
    for part, cls, name, get in items:
        if cls not in CLASSES:
            raise ValueError(f"{source}: unknown class folder {cls!r}; expected one of {CLASSES}")
        buckets[part].append((CLASSES.index(cls), name, get))
    out = {}
    for part, rows in buckets.items():
        if not rows:
            raise DataNotFoundError(f"{source}: no images under {part}/<class>/")
        rows.sort(key=lambda r: (r[0], r[1]))          # deterministic order whatever the archive order
        xs = np.stack([_decode(get()) for _, _, get in rows])
        out[f"{part}_x"] = torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous()
        out[f"{part}_y"] = torch.tensor([r[0] for r in rows], dtype=torch.int64)
    return out


def _split_path(parts: tuple[str, ...]):
    """('.../train', 'cat', 'x.jpg') -> ('train', 'cat', 'x.jpg') if it is an image in the layout."""
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    part, cls, name = parts[-3], parts[-2], parts[-1]
    return (part, cls, name) if part in ("train", "test") else None


def _read_image_tar(path: Path) -> dict:
    items = []
    with tarfile.open(path, "r|*") as tar:          # stream: one sequential pass over the archive
        for m in tar:
            key = _split_path(tuple(Path(m.name).parts)) if m.isfile() else None
            if key:
                blob = tar.extractfile(m).read()
                items.append((*key, (lambda b=blob: b)))
    return _collect(items, str(path))


def _read_image_folder(root: Path) -> dict:
    items = []
    for f in root.glob("*/*/*"):
        key = _split_path(f.relative_to(root).parts)
        if key:
            items.append((*key, f.read_bytes))
    return _collect(items, str(root))


def find_source(data_dir: Path) -> tuple[str, Path] | None:
    """The first CIFAR-10 source in ``data_dir``: (copy, path), or None."""
    official = data_dir / "cifar-10-batches-py"
    if (official / "data_batch_1").exists():
        return "official", official
    for name in ("cifar10-jpg", "cifar10", "."):
        folder = (data_dir / name).resolve()
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return _copy_of_folder(folder), folder
    tars = sorted(data_dir.glob("*.tar.gz")) + sorted(data_dir.glob("*.tgz"))
    tars = [t for t in tars if t.name != "cifar-10-python.tar.gz"]
    if tars:
        return ("jpeg" if "jpg" in tars[0].name or "jpeg" in tars[0].name else "images"), tars[0]
    return None


def _copy_of_folder(folder: Path) -> str:
    first = next(folder.glob("train/*/*"), None)
    return "jpeg" if first is not None and first.suffix.lower() in (".jpg", ".jpeg") else "images"


def _missing_message(data_dir: Path) -> str:
    return (
        f"No CIFAR-10 found in {data_dir}.\n"
        "Put one of these there (or point ${env} at a folder that has one):\n"
        "  * the official python batches: cifar-10-batches-py/ (torchvision's CIFAR10 format), or run\n"
        "    `python -m pruning_lib.data prepare --download` where there is internet;\n"
        "  * the image-folder layout train/<class>/*.jpg and test/<class>/*.jpg, as a folder or a\n"
        "    .tar.gz, e.g. `python -m pruning_lib.data prepare --source ../shared/data/cifar10-jpg.tar.gz`."
    ).replace("${env}", f"${DATA_ENV}")


# --------------------------------------------------------------------------- cache

def cache_path(data_dir: Path, copy: str) -> Path:
    return data_dir / "cache" / f"cifar10-{copy}.pt"


def prepare(data_dir: Path | str | None = None, source: Path | str | None = None,
            download: bool = False) -> Path:
    """Decode CIFAR-10 once into ``<data_dir>/cache/cifar10-<copy>.pt`` and return its path.

    ``source``: a tar.gz or folder in the image layout, or an official ``cifar-10-batches-py``
    folder; default: whatever :func:`find_source` finds in ``data_dir``. ``download``: fetch the
    official batches with torchvision (needs internet).
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    if download:
        from torchvision.datasets import CIFAR10
        CIFAR10(str(data_dir), train=True, download=True)
        CIFAR10(str(data_dir), train=False, download=True)
        source = data_dir / "cifar-10-batches-py"
    if source is not None:
        source = Path(source).expanduser().resolve()
        if not source.exists():
            raise DataNotFoundError(f"{source} does not exist.\n" + _missing_message(data_dir))
        if source.name == "cifar-10-batches-py":
            found = ("official", source)
        elif source.is_dir():
            found = (_copy_of_folder(source), source)
        else:
            found = ("jpeg" if "jpg" in source.name or "jpeg" in source.name else "images", source)
    else:
        found = find_source(data_dir)
        if found is None:
            raise DataNotFoundError(_missing_message(data_dir))
    copy, path = found
    target = cache_path(data_dir, copy)
    if target.exists():
        return target
    if copy == "official":
        tensors = _read_official(path)
    elif path.is_dir():
        tensors = _read_image_folder(path)
    else:
        tensors = _read_image_tar(path)
    tensors["copy"] = copy
    tensors["source"] = path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    torch.save(tensors, tmp)
    tmp.replace(target)
    return target


def _find_cache(data_dir: Path, copy: str | None) -> Path | None:
    for c in ([copy] if copy else ["official", "jpeg", "images"]):
        p = cache_path(data_dir, c)
        if p.exists():
            return p
    return None


_MEMO: dict = {}


def _load_tensors(data_dir: Path | str | None, copy: str | None) -> dict:
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    path = _find_cache(data_dir, copy)
    if path is None:
        if copy is None and find_source(data_dir) is None:
            raise DataNotFoundError(_missing_message(data_dir))
        path = prepare(data_dir)
    key = (str(path), path.stat().st_mtime)
    if key not in _MEMO:
        _MEMO.clear()
        _MEMO[key] = torch.load(path, weights_only=True)
    return _MEMO[key]


@dataclass(frozen=True)
class DatasetInfo:
    """Which CIFAR-10 copy is in use and where it came from (see :func:`dataset_info`)."""
    copy: str                      # "official", "jpeg" or "images"
    source: str                    # file or folder name it was decoded from
    cache: Path                    # the decoded tensor file
    train_images: int
    test_images: int
    train_labels: torch.Tensor = field(repr=False, compare=False)   # labels of all 50,000 training images


def dataset_info(data_dir: Path | str | None = None, copy: str | None = None) -> DatasetInfo:
    """Describe the cached CIFAR-10 that :func:`load_split` reads (decoding it first if needed)."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    t = _load_tensors(data_dir, copy)
    return DatasetInfo(copy=t["copy"], source=t.get("source", "?"), cache=_find_cache(data_dir, t["copy"]),
                       train_images=len(t["train_y"]), test_images=len(t["test_y"]), train_labels=t["train_y"])


# --------------------------------------------------------------------------- splits

def balanced_indices(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """``per_class`` indices of each class, drawn by a seeded permutation, sorted."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than {per_class} requested")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def split_indices(train_y: torch.Tensor, dist_per_class: int = DIST_PER_CLASS,
                  val_per_class: int = VAL_PER_CLASS, seed: int = SPLIT_SEED) -> dict:
    """Disjoint, class-balanced index sets of the training images: train / dist / val."""
    held = balanced_indices(train_y, dist_per_class + val_per_class, seed)
    g = torch.Generator().manual_seed(seed + 1)
    dist, val = [], []
    for c in range(int(train_y.max()) + 1):
        idx = held[train_y[held] == c]
        idx = idx[torch.randperm(len(idx), generator=g)]
        dist.append(idx[:dist_per_class])
        val.append(idx[dist_per_class:])
    mask = torch.ones(len(train_y), dtype=torch.bool)
    mask[held] = False
    return {"train": torch.nonzero(mask).flatten(),
            "dist": torch.cat(dist).sort().values,
            "val": torch.cat(val).sort().values}


def load_split(name: str, data_dir: Path | str | None = None, copy: str | None = None) -> CIFAR10Split:
    """One of ``train``, ``dist``, ``val``, ``test`` as tensors (decoding and caching on first use)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
    t = _load_tensors(data_dir, copy)
    if name == "test":
        return CIFAR10Split("test", t["test_x"], t["test_y"], t["copy"])
    idx = split_indices(t["train_y"])[name]
    return CIFAR10Split(name, t["train_x"][idx], t["train_y"][idx], t["copy"])


# --------------------------------------------------------------------------- batches

def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float32, standardised with the CIFAR-10 channel statistics."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x.float().div_(255) - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Per-sample random crop (zero padding ``pad``) and horizontal flip of a uint8 batch.

    Vectorised over the batch: each image gets its own crop offset and flip, at tensor speed.
    """
    n, _, h, w = x.shape
    dev = x.device                 # random numbers come from the (CPU) generator, indexing runs on x's device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]          # (n,1,h,1)
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]          # (n,1,1,w)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image at a random centre (DeVries & Taylor, 2017).

    The square covers rows/columns ``[c - size//2, c - size//2 + size)`` around a centre ``c`` drawn
    uniformly over the image, clipped at the border (so near an edge it is smaller).
    Applied to normalised images, zero is the data mean. Vectorised over the batch."""
    if size < 0:
        raise ValueError(f"cutout size must be >= 0 pixels (0 disables it), got {size}")
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n,), generator=generator).to(dev)[:, None, None]
    cx = torch.randint(0, w, (n,), generator=generator).to(dev)[:, None, None]
    dy = torch.arange(h, device=dev)[None, :, None] - cy + size // 2                  # (n,h,1)
    dx = torch.arange(w, device=dev)[None, None, :] - cx + size // 2                  # (n,1,w)
    inside = (dy >= 0) & (dy < size) & (dx >= 0) & (dx < size)                        # (n,h,w)
    return x.masked_fill(inside[:, None], 0.0)


def batches(split: CIFAR10Split, batch_size: int, shuffle: bool = False, train_augment: bool = False,
            generator: torch.Generator | None = None, drop_last: bool = False, cutout_size: int = 0):
    """Yield (normalised float images, labels) batches from a split held in memory.

    ``train_augment``: random crop and flip per image; ``cutout_size`` > 0 adds Cutout."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size].to(split.x.device)
        x = split.x[idx]
        if train_augment:
            x = augment(x, generator)
        x = normalize(x)
        if train_augment and cutout_size:
            x = cutout(x, cutout_size, generator)
        yield x, split.y[idx.to(split.y.device)]


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(prog="python -m pruning_lib.data",
                                description="Prepare (decode and cache) CIFAR-10 for the course.")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("prepare", help="decode a CIFAR-10 source once into the cache")
    q.add_argument("--data-dir", default=None, help=f"data folder (default ${DATA_ENV} or data/)")
    q.add_argument("--source", default=None, help="tar.gz or folder of train|test/<class>/*.jpg, "
                                                  "or a cifar-10-batches-py folder")
    q.add_argument("--download", action="store_true", help="download the official batches (internet)")
    a = p.parse_args(argv)
    try:
        path = prepare(a.data_dir, a.source, a.download)
    except DataNotFoundError as e:
        raise SystemExit(str(e))
    t = torch.load(path, weights_only=True)
    print(f"CIFAR-10 ({t['copy']} copy, from {t['source']}): {len(t['train_y'])} train + "
          f"{len(t['test_y'])} test images cached in {path}")


if __name__ == "__main__":
    main()

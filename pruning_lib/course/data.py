"""CIFAR-10 as cached uint8 tensors, with the course's fixed, class-balanced splits.

Sources (looked for in the data folder, in this order):
  * a cache file already made by :func:`prepare` (``cache/cifar10-<copy>.pt``);
  * the official python batches (``cifar-10-batches-py/``, torchvision's ``CIFAR10`` format);
  * the image-folder layout ``[top/]train|test/<class>/*.jpg|png``, as a folder or as a ``.tar.gz``;
  * with none of these, ``python -m pruning_lib.data prepare`` downloads the pinned JPEG copy (the
    GitHub archive named in ``cifar10_jpeg.json``, which the shipped checkpoints were trained on).
Images are decoded once into one tensor file; every later pass costs only the model's time. Nothing
unchecked is cached: every class in both splits with balanced counts, the JPEG copy file for file
against the pinned checksums, the official batches through a restricted unpickler.

Splits of the 50,000 training images (deterministic, disjoint, class-balanced by count per class):
``train`` (for training the shipped networks), ``dist`` (labelled samples from the data distribution,
for TVSPrune's statistics) and ``val`` (for accuracy-gated pruning decisions). ``test`` is the 10,000
test images, used for every reported number.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

try:
    import fcntl                     # POSIX; without it (Windows) concurrent prepares are not locked
except ImportError:                  # pragma: no cover
    fcntl = None
try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct     # numpy >= 2
except ImportError:                  # pragma: no cover
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

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
KNOWN_COPIES = ("official", "jpeg", "images")   # "images": an image-folder copy that is not the pinned JPEG one
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DataNotFoundError(FileNotFoundError):
    """No CIFAR-10 source in the data folder; the message says what to put where."""


class DataIntegrityError(ValueError):
    """A source or cache is damaged, incomplete or not the expected copy; the message names the file and the fix."""


def default_data_dir() -> Path:
    """``$PRUNING_COURSE_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "data"


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

    @property
    def reporting_only(self) -> bool:
        """The test split and its subsets report results and never decide anything (a gate, scores):
        the course's rule, read by the pruning verbs through the data-source protocol."""
        return self.name.partition("[")[0] == "test"

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
PARTS = ("train", "test")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what the official batches hold: dicts, lists, str, bytes, ints, numpy arrays.

    Any other global (a function such as ``exec`` or ``os.system``, any class) is refused, so a
    crafted file in the data folder cannot run code during :func:`prepare`."""
    ALLOWED = {("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
               ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,     # batches pickled by numpy 1
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}                          # bytes in protocol-2 pickles

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def _unpickle_batch(path: Path) -> dict:
    """One official batch file, read with :class:`_BatchUnpickler`; anything else is an error naming it."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataIntegrityError(
            f"{path}: not an official CIFAR-10 batch ({e}); these files hold only dicts, lists, strings, "
            f"numbers and numpy arrays. Delete the folder {path.parent} and fetch the official batches with "
            f"`python -m pruning_lib.data prepare --download official`.") from None
    if not isinstance(entry, dict):
        raise DataIntegrityError(f"{path}: expected a dict, got {type(entry).__name__}; "
                                 "fetch the official batches with `--download official`")
    return entry


def _read_official(folder: Path) -> dict:
    """The python batches (torchvision's ``CIFAR10`` format), read with a restricted unpickler.

    Read the way torchvision reads them (``data``: uint8 rows of 3x32x32 channel planes, ``labels``),
    but without torchvision's md5 check, which refuses any copy whose bytes differ from the
    official files (re-pickled or test copies); each batch is checked for shape and labels instead.
    """
    meta = folder / "batches.meta"
    if meta.exists():
        names = _unpickle_batch(meta).get("label_names")
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
            entry = _unpickle_batch(path)
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
        per_class = torch.bincount(out[f"{part}_y"], minlength=len(CLASSES)).tolist()
        _check_counts({(part, c): n for c, n in zip(CLASSES, per_class)}, str(folder),
                      "`python -m pruning_lib.data prepare --download official`", parts=(part,))
    return out


class _Image(NamedTuple):
    """One image file of the layout ``[top/]train|test/<class>/<name>``, with its bytes."""
    top: str
    part: str
    cls: str
    name: str
    data: bytes

    @property
    def where(self) -> str:
        return f"{self.part}/{self.cls}/{self.name}"


def _layout_key(parts: tuple[str, ...], source: str) -> tuple[str, str, str, str] | None:
    """(top, part, class, name) of a file ``[top/]train|test/<class>/<name>``, or None if outside the layout.

    At most one top folder (GitHub's archives put everything under ``<repo>-<commit>/``). A file in
    a class folder that is not an image is an error; hidden files (``.DS_Store``) are skipped."""
    if len(parts) not in (3, 4) or parts[-3] not in PARTS or parts[-1].startswith("."):
        return None
    if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        raise DataIntegrityError(f"{source}: {'/'.join(parts)} is not an image ({', '.join(IMAGE_SUFFIXES)}); "
                                 "class folders hold only images: remove it, or use an unmodified copy")
    return ("/".join(parts[:-3]), parts[-3], parts[-2], parts[-1])


def _image_root(folder: Path) -> Path:
    """``folder`` if it holds train/ and test/, else its one subfolder that does (an unpacked archive)."""
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        return folder
    inner = [d for d in folder.iterdir() if d.is_dir() and (d / "train").is_dir()] if folder.is_dir() else []
    return inner[0] if len(inner) == 1 else folder


def _read_image_folder(root: Path) -> list[_Image]:
    base, items = _image_root(root), []
    for f in sorted(base.glob("*/*/*")):
        key = _layout_key(f.relative_to(base).parts, str(root)) if f.is_file() else None
        if key:
            items.append(_Image(*key, f.read_bytes()))
    return items


def _read_image_tar(path: Path) -> list[_Image]:
    """Every image of a (gzipped) tar, in one sequential pass, refusing an archive that ends early.

    Python's streaming tar reader takes a damaged header for the end of the archive, so after the
    last member the rest of the stream must be the zero padding of a tar's end, and the gzip
    stream must reach its end (where its CRC and length are checked)."""
    items = []
    try:
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
            raw.seek(0)
            with stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for m in tar:
                    key = _layout_key(tuple(Path(m.name).parts), str(path)) if m.isfile() else None
                    if key:
                        items.append(_Image(*key, tar.extractfile(m).read()))
                ended_at = tar.offset
                while chunk := tar.fileobj.read(1 << 20):         # what follows the end-of-archive block
                    if chunk.strip(b"\0"):
                        raise tarfile.ReadError(f"the tar stream ends early, at an unreadable header at byte "
                                                f"{ended_at:,} of {len(items):,} images")
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise DataIntegrityError(f"{path}: the archive is damaged or incomplete ({e}). Nothing was cached. "
                                 f"Copy or download it again ({_GET_JPEG}).") from None
    return items


_GET_JPEG = "`python -m pruning_lib.data prepare --download jpeg` fetches the pinned JPEG copy"


def _check_counts(counts: dict, source: str, fix: str, parts: tuple[str, ...] = PARTS) -> None:
    """Every class present in every split, with one count per split (CIFAR-10 is class-balanced)."""
    missing = [f"{p}/{c}" for p in parts for c in CLASSES if not counts.get((p, c))]
    if missing:
        raise DataIntegrityError(f"{source}: class folder(s) {', '.join(missing)} missing or empty; a CIFAR-10 "
                                 f"copy has all {len(CLASSES)} classes in {' and '.join(parts)}. The copy is "
                                 f"incomplete: {fix}.")
    for p in parts:
        per_class = {c: counts[(p, c)] for c in CLASSES}
        usual = max(set(per_class.values()), key=list(per_class.values()).count)
        odd = [f"{p}/{c} ({n})" for c, n in per_class.items() if n != usual]
        if odd:
            raise DataIntegrityError(f"{source}: unequal class counts in {p}: {', '.join(odd)} against {usual} "
                                     f"for every other class. The copy is incomplete or modified: {fix}.")


def content_digests(images: list[_Image]) -> dict[str, dict]:
    """Per ``split/class`` folder: its file count and the sha256 of its sorted ``"<name> <sha256>\\n"`` lines.

    A content checksum of the files, independent of how the archive was packed (order, top folder,
    compression), so a mismatch names the class folders that differ."""
    lines: dict[str, list[str]] = {}
    for im in images:
        lines.setdefault(f"{im.part}/{im.cls}", []).append(f"{im.name} {hashlib.sha256(im.data).hexdigest()}\n")
    return {k: {"files": len(v), "sha256": hashlib.sha256("".join(sorted(v)).encode()).hexdigest()}
            for k, v in sorted(lines.items())}


PINNED_JPEG_FILE = "cifar10_jpeg.json"
URL_ENV = "PRUNING_COURSE_CIFAR_URL"


def pinned_jpeg() -> dict:
    """The pinned JPEG copy (``pruning_lib/course/cifar10_jpeg.json``): its GitHub commit, URL and content digests."""
    return json.loads((Path(__file__).with_name(PINNED_JPEG_FILE)).read_text())


def _verify_pinned(images: list[_Image], source: str) -> None:
    """The files equal the pinned JPEG copy's, folder by folder (the shipped checkpoints were trained on it)."""
    pinned, found = pinned_jpeg(), content_digests(images)
    differ = [f"{k} ({found.get(k, {}).get('files', 0)} files, {v['files']} expected)"
              if found.get(k, {}).get("files") != v["files"] else f"{k} (same count, other contents)"
              for k, v in pinned["folders"].items() if found.get(k) != v]
    differ += [f"{k} (not in the pinned copy)" for k in found if k not in pinned["folders"]]
    if differ:
        raise DataIntegrityError(
            f"{source}: not the pinned JPEG copy of CIFAR-10 ({pinned['repository']} at commit "
            f"{pinned['commit'][:12]}, which the shipped checkpoints were trained on): the files of "
            f"{', '.join(differ)} differ from the checksums in pruning_lib/course/{PINNED_JPEG_FILE}. Nothing was "
            f"cached. {_GET_JPEG[0].upper() + _GET_JPEG[1:]} again from {pinned['url']}; a copy of your own "
            "with other images can be used as PNG files (copy 'images').")


def _decode(im: _Image, source: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(im.data)) as pic:
            arr = np.asarray(pic if pic.mode == "RGB" else pic.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataIntegrityError(f"{source}: {im.where} is not a readable image ({e}); replace it with the "
                                 "original file, or pass a complete copy with --source") from None
    if arr.shape != (32, 32, 3):
        raise DataIntegrityError(f"{source}: {im.where} is {arr.shape[1]}x{arr.shape[0]}, not a 32x32 CIFAR "
                                 "image; replace it with the original file, or pass a complete copy with --source")
    return arr


def _copy_of_images(names) -> str:
    """"jpeg" when every image is a JPEG file, else "images" (lossless or mixed)."""
    names = list(names)
    return "jpeg" if names and all(n.lower().endswith((".jpg", ".jpeg")) for n in names) else "images"


def _collect(images: list[_Image], source: str, copy: str | None = None) -> dict:
    """Check and decode the images of one source: all classes, balanced counts, the pinned files for "jpeg"."""
    tops = sorted({im.top for im in images})
    if len(tops) > 1:
        raise DataIntegrityError(f"{source}: images under several top folders {tops}; give one copy")
    unknown = sorted({im.cls for im in images} - set(CLASSES))
    if unknown:
        raise ValueError(f"{source}: unknown class folder {unknown[0]!r}; expected one of {CLASSES}")
    for part in PARTS:
        if not any(im.part == part for im in images):
            raise DataNotFoundError(f"{source}: no images under {part}/<class>/ (nor under one top folder, "
                                    f"<top>/{part}/<class>/)")
    counts: dict = {}
    for im in images:
        counts[(im.part, im.cls)] = counts.get((im.part, im.cls), 0) + 1
    _check_counts(counts, source, f"pass a complete copy with --source ({_GET_JPEG})")
    copy = copy or _copy_of_images(im.name for im in images)
    if copy == "jpeg":
        _verify_pinned(images, source)
    out = {"copy": copy}
    for part in PARTS:
        rows = sorted((CLASSES.index(im.cls), im.name, im) for im in images if im.part == part)
        xs = np.stack([_decode(im, source) for _, _, im in rows])       # deterministic order: class, file name
        out[f"{part}_x"] = torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous()
        out[f"{part}_y"] = torch.tensor([r[0] for r in rows], dtype=torch.int64)
    return out


def _sources(data_dir: Path):
    """Every CIFAR-10 source in ``data_dir``, as (copy, path), in order of preference."""
    official = data_dir / "cifar-10-batches-py"
    if (official / "data_batch_1").exists():
        yield "official", official
    for name in ("cifar10-jpg", "cifar10", "."):
        folder = (data_dir / name).resolve()
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            yield _copy_of_folder(folder), folder
    for tar in sorted(data_dir.glob("*.tar.gz")) + sorted(data_dir.glob("*.tgz")):
        if tar.name != "cifar-10-python.tar.gz":
            yield _copy_of_tar(tar), tar


def find_source(data_dir: Path) -> tuple[str, Path] | None:
    """The first CIFAR-10 source in ``data_dir``: (copy, path), or None."""
    return next(_sources(Path(data_dir)), None)


def _copy_of_folder(folder: Path) -> str:
    first = next(_image_root(folder).glob("train/*/*"), None)
    return _copy_of_images([first.name] if first is not None else [])


def _copy_of_tar(path: Path) -> str:
    """The copy a tar holds, from its first image file (a quick look: :func:`prepare` checks it all)."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                parts = Path(m.name).parts
                if m.isfile() and len(parts) >= 3 and parts[-3] in PARTS and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    return _copy_of_images([m.name])
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        pass                         # a damaged archive: prepare() reads it in full and says what is wrong
    return "images"


def _missing_message(data_dir: Path) -> str:
    return (
        f"No CIFAR-10 found in {data_dir}.\n"
        "Put one of these there (or point ${env} at a folder that has one):\n"
        "  * the pinned JPEG copy the checkpoints were trained on: `python -m pruning_lib.data prepare`\n"
        "    downloads it where there is internet (or `--download jpeg`);\n"
        "  * the official python batches: cifar-10-batches-py/ (torchvision's CIFAR10 format), or run\n"
        "    `python -m pruning_lib.data prepare --download official` where there is internet;\n"
        "  * the image-folder layout train/<class>/*.jpg and test/<class>/*.jpg, as a folder or a\n"
        "    .tar.gz, e.g. `python -m pruning_lib.data prepare --source ../shared/data/cifar10-jpg.tar.gz`."
    ).replace("${env}", f"${DATA_ENV}")


# --------------------------------------------------------------------------- download

def _temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new file with a unique name in ``folder``, with the permissions of any new file (the umask's)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)                 # mkstemp makes it private (0600)
    return Path(tmp)


def _download(url: str, folder: Path, name: str) -> Path:
    """Fetch ``url`` into a unique temporary file in ``folder`` (tqdm progress bar); the caller renames it."""
    from tqdm.auto import tqdm
    tmp = _temp_file(folder, f".{name}.", ".part")
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}") as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and bar.n != total:
                raise OSError(f"got {bar.n:,} of {total:,} bytes")
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, ValueError)):      # URLError, HTTPError, timeouts, a short read, a bad URL
            raise DataNotFoundError(f"could not download {url} ({e}); nothing was cached.\n"
                                    + _missing_message(folder)) from None
        raise
    return tmp


def _prepare_download_jpeg(data_dir: Path) -> Path:
    """Fetch the pinned JPEG copy (or ``$PRUNING_COURSE_CIFAR_URL``), verify it by content, and cache it.

    The archive is kept as ``cifar10-jpg-<commit>.tar.gz`` in the data folder only once it decoded and
    matched the pinned checksums; a copy that does not match leaves nothing behind."""
    pinned = pinned_jpeg()
    final = data_dir / f"cifar10-jpg-{pinned['commit'][:8]}.tar.gz"
    if final.exists():
        return _prepare_source(data_dir, final, copy="jpeg")
    url = os.environ.get(URL_ENV) or pinned["url"]
    tmp = _download(url, data_dir, final.name)
    try:
        target = _decode_and_install(data_dir, tmp, copy="jpeg", name=final)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- cache

def cache_path(data_dir: Path, copy: str) -> Path:
    return data_dir / "cache" / f"cifar10-{copy}.pt"


def _source_id(path: Path) -> str:
    """Identifies a source's bytes: the sha256 of a file, or of a folder's file names, sizes and times."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return f"sha256:{h.hexdigest()}"
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path).as_posix()} {st.st_size} {st.st_mtime_ns}\n".encode())
    return f"files:{h.hexdigest()}"


def _cached_source_id(path: Path) -> str | None:
    """The source id recorded in a cache file, or None (no cache, an older cache, or an unreadable one)."""
    try:
        return torch.load(path, weights_only=True, mmap=True).get("source_id")
    except Exception:                # noqa: BLE001 -- any unreadable cache is simply rebuilt
        return None


@contextmanager
def _prepare_lock(data_dir: Path):
    """Hold ``<data_dir>/cache/.prepare.lock`` (flock) so concurrent ``prepare`` runs take turns."""
    lock = data_dir / "cache" / ".prepare.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another `prepare` of {data_dir} (lock {lock})", file=sys.stderr)
                fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _install(tensors: dict, target: Path) -> None:
    """Write the cache under a unique temporary name and rename it into place (atomic: never half-written)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_file(target.parent, f"{target.stem}.", ".tmp")
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _decode_and_install(data_dir: Path, path: Path, copy: str | None = None, name: Path | None = None) -> Path:
    """Read, check and decode one source, then install its cache (``name``: the path to record as its source)."""
    name = name or path
    if path.is_dir() and (path.name == "cifar-10-batches-py" or (path / "data_batch_1").exists()):
        tensors = {"copy": "official", **_read_official(path)}
    else:
        images = _read_image_folder(path) if path.is_dir() else _read_image_tar(path)
        tensors = _collect(images, str(name), copy)
    tensors.update(source=name.name, source_path=str(name), source_id=_source_id(path))
    target = cache_path(data_dir, tensors["copy"])
    _install(tensors, target)
    return target


def _prepare_source(data_dir: Path, source: Path, copy: str | None = None) -> Path:
    """The cache of ``source``: kept if it was built from these very bytes, else decoded and replaced."""
    sid = _source_id(source)
    for c in ([copy] if copy else KNOWN_COPIES):
        if _cached_source_id(cache_path(data_dir, c)) == sid:
            return cache_path(data_dir, c)
    return _decode_and_install(data_dir, source, copy)


def _download_mode(download: bool | str | None) -> str | None:
    if download in (None, False):
        return None
    if download is True:             # the former meaning of download=True
        return "official"
    if download not in ("jpeg", "official"):
        raise ValueError(f"download={download!r}: choose 'jpeg' (the pinned JPEG copy) or 'official'")
    return download


def prepare(data_dir: Path | str | None = None, source: Path | str | None = None,
            download: bool | str | None = False) -> Path:
    """Decode CIFAR-10 once into ``<data_dir>/cache/cifar10-<copy>.pt`` and return its path.

    ``source``: a tar.gz or folder in the image layout, or an official ``cifar-10-batches-py``
    folder; a cache built from another source is replaced. Default: the cache already there, else
    whatever :func:`find_source` finds in ``data_dir``. ``download``: ``"jpeg"`` fetches the pinned
    JPEG copy (``$PRUNING_COURSE_CIFAR_URL`` overrides its URL), ``"official"`` (or True) the official
    batches with torchvision; both need internet. Every source is checked (all classes, balanced
    counts, the pinned checksums for the JPEG copy) before its cache is installed; concurrent runs
    take turns on a lock file.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    mode = _download_mode(download)
    if mode and source is not None:
        raise ValueError("prepare: give a source or a download, not both")
    data_dir.mkdir(parents=True, exist_ok=True)
    with _prepare_lock(data_dir):
        if mode == "jpeg":
            return _prepare_download_jpeg(data_dir)
        if mode == "official":
            from torchvision.datasets import CIFAR10
            CIFAR10(str(data_dir), train=True, download=True)
            CIFAR10(str(data_dir), train=False, download=True)
            source = data_dir / "cifar-10-batches-py"
        if source is not None:
            source = Path(source).expanduser().resolve()
            if not source.exists():
                raise DataNotFoundError(f"{source} does not exist.\n" + _missing_message(data_dir))
            return _prepare_source(data_dir, source)
        found = find_source(data_dir)
        if found is None:
            cached = _find_cache(data_dir, None)
            if cached is None:
                raise DataNotFoundError(_missing_message(data_dir))
            return cached
        copy, path = found
        target = cache_path(data_dir, copy)
        return target if target.exists() else _decode_and_install(data_dir, path)


def _find_cache(data_dir: Path, copy: str | None) -> Path | None:
    for c in ([copy] if copy else KNOWN_COPIES):
        p = cache_path(data_dir, c)
        if p.exists():
            return p
    return None


def _check_copy(copy: str | None) -> None:
    if copy is not None and copy not in KNOWN_COPIES:
        raise ValueError(f"unknown copy {copy!r}; choose one of {KNOWN_COPIES} (or None: the cache there is)")


def _no_copy_message(data_dir: Path, copy: str) -> str:
    present = [p.name for p in sorted((data_dir / "cache").glob("cifar10-*.pt"))]
    how = {"jpeg": "`python -m pruning_lib.data prepare --download jpeg` (the pinned JPEG copy), or "
                   "`--source path/to/cifar10-jpg.tar.gz`",
           "official": "`python -m pruning_lib.data prepare --download official`",
           "images": "`python -m pruning_lib.data prepare --source path/to/folder-or-archive`"}[copy]
    return (f"No {copy} copy of CIFAR-10 in {data_dir} (caches there: {', '.join(present) or 'none'}; "
            f"sources: {', '.join(f'{c} {p.name}' for c, p in _sources(data_dir)) or 'none'}). Make it with {how}.")


_MEMO: dict = {}
_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y", "copy")


def _read_cache(path: Path) -> dict:
    """Load a cache file, refusing a truncated or foreign one with a message naming it and the fix."""
    rerun = (f"Delete it and rerun `python -m pruning_lib.data prepare` (with the --source or --download "
             f"that made it).")
    try:
        t = torch.load(path, weights_only=True)
    except Exception as e:           # noqa: BLE001 -- torch raises several types for a damaged file
        raise DataIntegrityError(f"{path}: this CIFAR-10 cache cannot be read ({type(e).__name__}): it is "
                                 f"truncated or damaged. {rerun}") from None
    ok = isinstance(t, dict) and all(k in t for k in _CACHE_KEYS)
    ok = ok and all(t[f"{p}_x"].ndim == 4 and t[f"{p}_x"].shape[1:] == (3, 32, 32) and
                    t[f"{p}_x"].dtype == torch.uint8 and len(t[f"{p}_x"]) == len(t[f"{p}_y"]) for p in PARTS)
    if not ok:
        raise DataIntegrityError(f"{path}: not a CIFAR-10 cache of this library (missing keys or shapes). {rerun}")
    return t


def _load_tensors(data_dir: Path | str | None, copy: str | None) -> dict:
    _check_copy(copy)
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    path = _find_cache(data_dir, copy)
    if path is None:
        if copy is None:
            if find_source(data_dir) is None:
                raise DataNotFoundError(_missing_message(data_dir))
            path = prepare(data_dir)
        else:
            source = next((p for c, p in _sources(data_dir) if c == copy), None)
            if source is None:
                raise DataNotFoundError(_no_copy_message(data_dir, copy))
            path = prepare(data_dir, source=source)
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    if key not in _MEMO:
        _MEMO.clear()
        _MEMO[key] = _read_cache(path)
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


def export_image_folder(split: str, out: Path | str, data_dir: Path | str | None = None,
                        copy: str | None = None) -> Path:
    """Write one split as ``out/<class>/<index>.png``, the layout ``torchvision.datasets.ImageFolder``
    reads: how notebook 05 stands in for a learner's own folder of images. PNG is lossless, so the
    pixels are exactly the decoded ones the checkpoints were evaluated on. Written into a temporary
    folder renamed at the end, so a half-written folder is never read; an existing ``out`` is refused."""
    from PIL import Image
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: remove it to export the {split!r} split again")
    data = load_split(split, data_dir, copy)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for c, name in enumerate(data.classes):
        folder = tmp / name
        folder.mkdir(parents=True)
        for i in torch.nonzero(data.y == c).flatten().tolist():
            Image.fromarray(data.x[i].permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(prog="python -m pruning_lib.data",
                                description="Prepare (decode and cache) CIFAR-10 for the course.")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("prepare", help="decode a CIFAR-10 source once into the cache (with nothing there: "
                                       "download the pinned JPEG copy)")
    q.add_argument("--data-dir", default=None, help=f"data folder (default ${DATA_ENV} or data/)")
    q.add_argument("--source", default=None, help="tar.gz or folder of train|test/<class>/*.jpg, "
                                                  "or a cifar-10-batches-py folder")
    q.add_argument("--download", choices=("jpeg", "official"), default=None,
                   help="download the pinned JPEG copy (GitHub, the checkpoints' copy; URL overridable with "
                        f"${URL_ENV}) or the official batches (torchvision); needs internet")
    e = sub.add_parser("export-images", help="write a split as <out>/<class>/<index>.png (an ImageFolder)")
    e.add_argument("--split", default="test", choices=SPLITS)
    e.add_argument("--out", required=True, help="folder to create (must not exist)")
    e.add_argument("--data-dir", default=None, help=f"data folder (default ${DATA_ENV} or data/)")
    c = sub.add_parser("checksum", help=f"print a source's per-folder content digests (as in {PINNED_JPEG_FILE})")
    c.add_argument("source", help="tar.gz or folder of train|test/<class>/*")
    a = p.parse_args(argv)
    try:
        if a.cmd == "checksum":
            source = Path(a.source)
            images = _read_image_folder(source) if source.is_dir() else _read_image_tar(source)
            print(json.dumps(content_digests(images), indent=1))
            return
        if a.cmd == "export-images":
            out = export_image_folder(a.split, a.out, a.data_dir)
            print(f"{a.split} split written as PNG files to {out}/<class>/")
            return
        data_dir = Path(a.data_dir) if a.data_dir else default_data_dir()
        download = a.download
        if download is None and a.source is None and _find_cache(data_dir, None) is None \
                and find_source(data_dir) is None:
            print(f"No CIFAR-10 in {data_dir}: downloading the pinned JPEG copy "
                  f"({os.environ.get(URL_ENV) or pinned_jpeg()['url']})", file=sys.stderr)
            download = "jpeg"
        path = prepare(data_dir, a.source, download)
        t = _read_cache(path)
    except (DataNotFoundError, DataIntegrityError, FileExistsError) as e:
        raise SystemExit(str(e))
    print(f"CIFAR-10 ({t['copy']} copy, from {t['source']}): {len(t['train_y'])} train + "
          f"{len(t['test_y'])} test images cached in {path}")



__all__ = ["CLASSES", "MEAN", "STD", "SPLITS", "COPIES", "KNOWN_COPIES", "DATA_ENV", "DIST_PER_CLASS", "VAL_PER_CLASS",
           "CIFAR10Split", "DataNotFoundError", "DataIntegrityError", "DatasetInfo", "default_data_dir", "load_split",
           "prepare", "export_image_folder", "find_source", "dataset_info", "cache_path", "content_digests", "pinned_jpeg", "balanced_indices",
           "split_indices", "normalize", "augment", "cutout", "batches", "main"]


if __name__ == "__main__":
    main()

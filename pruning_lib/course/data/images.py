"""The image-folder layout ``[top/]train|test/<class>/*``, as a folder or a tar: reading, checking and decoding it."""
from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .checksums import _check_counts, _verify_pinned
from .common import _GET_JPEG, CLASSES, IMAGE_SUFFIXES, PARTS, DataIntegrityError, DataNotFoundError


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


__all__: list[str] = []

"""What a CIFAR-10 copy must hold: every class with balanced counts, and for the JPEG copy the pinned content checksums."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .common import _GET_JPEG, CLASSES, PARTS, DataIntegrityError

if TYPE_CHECKING:
    from .images import _Image

PINNED_JPEG_FILE = "cifar10_jpeg.json"


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


def pinned_jpeg() -> dict:
    """The pinned JPEG copy (``pruning_lib/course/cifar10_jpeg.json``): its GitHub commit, URL and content digests."""
    return json.loads((Path(__file__).resolve().parents[1] / PINNED_JPEG_FILE).read_text())


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


__all__ = ["PINNED_JPEG_FILE", "content_digests", "pinned_jpeg"]

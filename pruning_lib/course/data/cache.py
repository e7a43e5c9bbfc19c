"""The decoded cache file: its path, the source it was built from, the prepare lock and atomic writes, reading it back."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from .common import KNOWN_COPIES, PARTS, DataIntegrityError

try:
    import fcntl                     # POSIX; without it (Windows) concurrent prepares are not locked
except ImportError:                  # pragma: no cover
    fcntl = None

def _temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new file with a unique name in ``folder``, with the permissions of any new file (the umask's)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)                 # mkstemp makes it private (0600)
    return Path(tmp)


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


def _find_cache(data_dir: Path, copy: str | None) -> Path | None:
    for c in ([copy] if copy else KNOWN_COPIES):
        p = cache_path(data_dir, c)
        if p.exists():
            return p
    return None


_CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y", "copy")


def _read_cache(path: Path) -> dict:
    """Load a cache file, refusing a truncated or foreign one with a message naming it and the fix."""
    rerun = (f"Delete it and rerun `python -m pruning_lib.data prepare` (with the --source or --download "
             f"that made it).")
    try:
        t = torch.load(path, weights_only=True, mmap=True)
    except Exception as e:           # noqa: BLE001 -- torch raises several types for a damaged file
        raise DataIntegrityError(f"{path}: this CIFAR-10 cache cannot be read ({type(e).__name__}): it is "
                                 f"truncated or damaged. {rerun}") from None
    ok = isinstance(t, dict) and all(k in t for k in _CACHE_KEYS)
    ok = ok and all(t[f"{p}_x"].ndim == 4 and t[f"{p}_x"].shape[1:] == (3, 32, 32) and
                    t[f"{p}_x"].dtype == torch.uint8 and len(t[f"{p}_x"]) == len(t[f"{p}_y"]) for p in PARTS)
    if not ok:
        raise DataIntegrityError(f"{path}: not a CIFAR-10 cache of this library (missing keys or shapes). {rerun}")
    return t


__all__ = ["cache_path"]

"""``prepare``: decode one CIFAR-10 source (found, given or downloaded), check it and install its cache."""
from __future__ import annotations

import os
from pathlib import Path

from . import checksums            # pinned_jpeg looked up on its module (a test stands in its own pinned copy)
from .cache import _cached_source_id, _find_cache, _install, _prepare_lock, _source_id, cache_path
from .common import KNOWN_COPIES, URL_ENV, DataNotFoundError, default_data_dir
from .download import _download
from .images import _collect, _read_image_folder, _read_image_tar
from .locate import _missing_message, find_source
from .official import _read_official


def _prepare_download_jpeg(data_dir: Path) -> Path:
    """Fetch the pinned JPEG copy (or ``$PRUNING_COURSE_CIFAR_URL``), verify it by content, and cache it.

    The archive is kept as ``cifar10-jpg-<commit>.tar.gz`` in the data folder only once it decoded and
    matched the pinned checksums; a copy that does not match leaves nothing behind."""
    pinned = checksums.pinned_jpeg()
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


def _download_mode(download: str | None) -> str | None:
    if download is None:
        return None
    if not isinstance(download, str) or download not in ("jpeg", "official"):
        raise ValueError(f"download={download!r}: choose 'jpeg' (the pinned JPEG copy) or 'official' "
                         "(the official batches), or None to download nothing")
    return download


def prepare(data_dir: Path | str | None = None, source: Path | str | None = None,
            download: str | None = None) -> Path:
    """Decode CIFAR-10 once into ``<data_dir>/cache/cifar10-<copy>.pt`` and return its path.

    ``source``: a tar.gz or folder in the image layout, or an official ``cifar-10-batches-py``
    folder; a cache built from another source is replaced. Default: the cache already there, else
    whatever :func:`find_source` finds in ``data_dir``. ``download``: ``"jpeg"`` fetches the pinned
    JPEG copy (``$PRUNING_COURSE_CIFAR_URL`` overrides its URL), ``"official"`` the official
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


__all__ = ["prepare"]

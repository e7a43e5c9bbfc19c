"""Fetching a URL into the data folder with a progress bar, leaving nothing behind when it fails."""
from __future__ import annotations

import urllib.request
from pathlib import Path

from .cache import _temp_file
from .common import DataNotFoundError
from .locate import _missing_message


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


__all__: list[str] = []

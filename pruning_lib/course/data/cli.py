"""The command line ``python -m pruning_lib.data``: prepare the cache, export a split as images, print checksums."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import checksums            # pinned_jpeg looked up on its module (a test stands in its own pinned copy)
from .cache import _find_cache, _read_cache
from .checksums import PINNED_JPEG_FILE, content_digests
from .common import DATA_ENV, SPLITS, URL_ENV, DataIntegrityError, DataNotFoundError, default_data_dir
from .export import export_image_folder
from .images import _read_image_folder, _read_image_tar
from .locate import find_source
from .preparation import prepare


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
                  f"({os.environ.get(URL_ENV) or checksums.pinned_jpeg()['url']})", file=sys.stderr)
            download = "jpeg"
        path = prepare(data_dir, a.source, download)
        t = _read_cache(path)
    except (DataNotFoundError, DataIntegrityError, FileExistsError) as e:
        raise SystemExit(str(e))
    print(f"CIFAR-10 ({t['copy']} copy, from {t['source']}): {len(t['train_y'])} train + "
          f"{len(t['test_y'])} test images cached in {path}")


__all__ = ["main"]

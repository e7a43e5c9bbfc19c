"""The learner's working copies of the course notebooks (what `make lab` serves).

JupyterLab writes into every notebook it opens (kernelspec on open, outputs and autosaves), so it
must not serve ``notebooks/``, the executed reference that ``make test`` compares against. It serves
git-ignored copies instead, kept at the same depth as ``notebooks/`` so that relative paths such as
``../data/`` resolve the same way.

    python scripts/site/working_copies.py sync  notebooks work   # copy what is missing, keep the rest
    python scripts/site/working_copies.py reset notebooks work   # fresh copies; old ones moved aside
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PREVIOUS = ".previous"  # hidden from JupyterLab's file browser


@dataclass
class SyncResult:
    """What one sync or reset did, by notebook file name."""

    copied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    kept_older: list[str] = field(default_factory=list)  # kept, but the reference changed since
    moved_to: Path | None = None  # reset: where the previous copies went


def reference_notebooks(src: Path) -> list[Path]:
    """The course notebooks in ``src``, in order; an error naming ``src`` if there are none."""
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise SystemExit(f"no notebooks (*.ipynb) in {src}: run this from the repository root "
                         f"and pass the folder of the course notebooks")
    return notebooks


def copy_atomically(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file, so no half-written notebook is ever served."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)


def sync(src: Path, dst: Path) -> SyncResult:
    """Copy each notebook of ``src`` that ``dst`` lacks; never touch a copy that exists."""
    result = SyncResult()
    dst.mkdir(parents=True, exist_ok=True)
    for nb in reference_notebooks(src):
        copy = dst / nb.name
        if not copy.exists():
            copy_atomically(nb, copy)
            result.copied.append(nb.name)
        elif nb.stat().st_mtime > copy.stat().st_mtime and not filecmp.cmp(nb, copy, shallow=False):
            result.kept_older.append(nb.name)
        else:
            result.kept.append(nb.name)
    return result


def reset(src: Path, dst: Path) -> SyncResult:
    """Move the current copies into ``dst/.previous/<UTC time>/`` (nothing is deleted), then sync."""
    notebooks = reference_notebooks(src)
    existing = [dst / nb.name for nb in notebooks if (dst / nb.name).exists()]
    moved_to = None
    if existing:
        moved_to = dst / PREVIOUS / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved_to.mkdir(parents=True, exist_ok=False)
        for copy in existing:
            copy.replace(moved_to / copy.name)
    result = sync(src, dst)
    result.moved_to = moved_to
    return result


def report(result: SyncResult, dst: Path) -> str:
    """A few lines for the terminal: what was copied, kept, and where old copies went."""
    lines = []
    if result.moved_to is not None:
        lines.append(f"previous copies moved to {result.moved_to}")
    if result.copied:
        lines.append(f"copied into {dst}/: {', '.join(result.copied)}")
    if result.kept:
        lines.append(f"your copies kept: {', '.join(result.kept)}")
    if result.kept_older:
        lines.append(f"kept, but notebooks/ has a newer version of: {', '.join(result.kept_older)} "
                     f"(`make lab-reset` takes it; your copies are moved to {dst}/{PREVIOUS}/)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["sync", "reset"])
    parser.add_argument("src", type=Path, help="the reference notebooks (notebooks/)")
    parser.add_argument("dst", type=Path, help="the working copies (work/)")
    args = parser.parse_args(argv)
    if args.src.resolve() == args.dst.resolve():
        parser.error(f"the working copies must be another folder than {args.src}")
    result = (sync if args.action == "sync" else reset)(args.src, args.dst)
    print(report(result, args.dst))
    return 0


if __name__ == "__main__":
    sys.exit(main())

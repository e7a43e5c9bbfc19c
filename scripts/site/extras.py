"""Print the optional-dependency groups (extras) of a pyproject.toml, comma-separated (`make wheelhouse`)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, as pip ships it
    from pip._vendor import tomli as tomllib


def extras(pyproject: Path) -> list[str]:
    """The names under ``[project.optional-dependencies]``, in file order."""
    return list(tomllib.loads(pyproject.read_text()).get("project", {}).get("optional-dependencies", {}))


if __name__ == "__main__":
    print(",".join(extras(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))

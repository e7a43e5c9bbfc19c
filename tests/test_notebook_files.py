"""The stored notebooks are in the form JupyterLab saves, so opening and saving one changes nothing.

The browser phase checks this in a real JupyterLab (tests_browser/test_lab.py); this is the cheap
check that catches a hand-built cell before that phase does.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_cell_sources_are_split_as_jupyter_saves_them(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(nb["cells"]):
        source = cell["source"]
        text = source if isinstance(source, str) else "".join(source)
        # nbformat and JupyterLab store a cell as text.splitlines(keepends=True): no empty line items.
        assert source == text.splitlines(keepends=True), (
            f"{path.name} cell {index} ({cell.get('id')}): source is not stored line by line as Jupyter "
            "saves it (an empty \"\" item or a line split elsewhere); rewrite it with nbformat.write")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_cell_ids_are_unique(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    ids = [cell.get("id") for cell in nb["cells"]]
    assert None not in ids, f"{path.name}: a cell has no id (nbformat 4.5 requires one)"
    assert len(ids) == len(set(ids)), f"{path.name}: repeated cell ids"

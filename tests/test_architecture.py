"""The packages of pruning_lib depend one way (docs/architecture.md): a module may import from its own
package and from the layers below it, never from a layer above, at module level or inside a function.
The few imports of the course from below are listed with their reason; a new one fails this test."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pruning_lib"

# bottom to top; units on one line may not import each other (except those listed in SAME)
LAYERS = [
    ("modes", "progress", "legacy"),  # foundations: restoring a model's modes, progress bars, earlier call shapes
    ("sources",),                     # the data-source protocol
    ("layers",),                      # what the library knows about each layer type (handlers)
    ("graph",),                       # discovery of the DFCs
    ("surgery",),                     # physical pruning of a removal plan
    ("measure",),                     # accuracy, parameters, FLOPs, latency
    ("scoring",),                     # criteria: channel scores
    ("pruning",),                     # procedures: global pruning, TVSPrune, BN recalibration, targets
    ("repair",),                      # repairing a pruned model
    ("course",),                      # the course: CIFAR-10 data, models, training, checkpoints
    ("data", "train", "__init__"),   # entry points and the public facade
]
LEVEL = {unit: i for i, units in enumerate(LAYERS) for unit in units}

# (importing module, imported unit): why this upward import is allowed (inside a function only)
ALLOWED = {
    ("pruning_lib.sources", "course"): "a course split given by name ('dist', 'val') loads the course on use",
    ("pruning_lib.repair.inputs", "course"): "the same, for the repair chapter's inputs",
}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, int, bool]]:
    """(module, imported module, line, at module level) for every import of pruning_lib inside it."""
    out = []
    for f in sorted(ROOT.rglob("*.py")):
        mod = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts)
        pkg = mod.removesuffix(".__init__") if f.name == "__init__.py" else mod.rpartition(".")[0]
        mod = mod.removesuffix(".__init__")
        tree = ast.parse(f.read_text(), str(f))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pruning_lib"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("pruning_lib")]
            out += [(mod, t, node.lineno, id(node) in top) for t in targets]
    return out


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m, _, _, _ in imports()} | {p.stem for p in ROOT.glob("*.py")} | \
            {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert units - set(LEVEL) == set(), "a new package or module: give it a layer in LAYERS and docs/architecture.md"


def test_no_module_imports_upward():
    upward = []
    for mod, target, line, at_top in imports():
        a, b = unit_of(mod), unit_of(target)
        if a == b or LEVEL[b] < LEVEL[a]:
            continue
        if (mod, b) in ALLOWED and not at_top:
            continue
        upward.append(f"{mod}:{line} imports {target} ({b} is {'above' if LEVEL[b] > LEVEL[a] else 'beside'} {a}"
                      f"{'' if at_top else ', inside a function'})")
    assert not upward, "\n".join(upward)


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The test itself can fail: a graph module importing the pruning procedures is reported."""
    pkg = tmp_path / "pruning_lib"
    (pkg / "graph").mkdir(parents=True)
    (pkg / "graph" / "__init__.py").write_text("")
    (pkg / "graph" / "bad.py").write_text("def f():\n    from ..pruning import global_prune\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    with pytest.raises(AssertionError, match=r"pruning_lib\.graph\.bad:2 imports pruning_lib\.pruning"):
        test_no_module_imports_upward()


def test_generic_verbs_on_a_users_data_load_no_course_module():
    """The course (CIFAR-10 splits, models) is loaded only when a course split is named: importing the
    library and repairing/recalibrating a model on a user's own batches leave it unloaded."""
    import subprocess
    import sys
    code = ("import sys, torch; from torch import nn; import pruning_lib as pl; "
            "from pruning_lib.repair.inputs import iter_inputs; "
            "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)); xs = [torch.randn(2, 3, 8, 8)]; "
            "list(iter_inputs(xs)); pl.bn_recalibrate(m, data=[(x, torch.zeros(2, dtype=torch.long)) for x in xs]); "
            "print(sorted(k for k in sys.modules if k.startswith('pruning_lib.course')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

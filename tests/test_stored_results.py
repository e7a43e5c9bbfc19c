"""Every file in ``data/results/`` is tied to today's code: its first steps are recomputed (issue 17).

The notebooks' claim cells read these files only, so a change to the pruning code (the removal order,
a criterion, TVSPrune's ranking, IterTVSPrune's acceptance, LDIFF, BN recalibration) would leave them
green. Here each file is rerun with the settings it records (``settings`` or ``command``, through the
script that wrote it) for a few steps, and the rerun must match the stored rows: parameter, FLOP and
channel counts (and sparsities computed from them) exactly, accuracies to within ``ACC_IMAGES`` images
of the split they were measured on (a prediction near a tie may flip under another thread count or
kernel), LDIFF and filter scores to ``SCORE_REL``. Timings are never compared. The rest of each file is
checked for internal consistency (summaries and drops follow from its own rows).

What is recomputed per file (everything else in it is not; see each test):

- ``dfpc_resnet56.json``: steps 0-3 of all four curves (channels, parameters, FLOPs); the accuracy on
  ``test[2000]`` of step 1 of DFPC (coupled).
- ``dfpc_resnet56_align8.json``: steps 0-3 of both curves (align 8).
- ``dfpc_resnet56_finetune.json``: steps 0-3 of both curves; its rows equal ``dfpc_resnet56.json``'s
  (same settings), so that file's accuracy check covers it. Not the one-epoch fine-tunes (147 s each).
- ``dfpc_resnet20.json`` and ``dfpc_resnet20_paper.json`` (the course and paper recipes' ResNet-20s, notebook
  02's recipe section): steps 0-3 of their three curves; the accuracy on ``test[2000]`` of DFPC's step 1 and
  L1's step 3 (course) and DFPC's step 2 (paper).
- ``dfpc_cifar_resnet50.json``: steps 0-1 of all four curves. No accuracy (each is a full test-set
  pass of a ResNet-50, minutes on a CPU), no fine-tune.
- ``tvsprune_resnet20.json``: IterTVSPrune's first step (the same at every target: scores on ``dist``,
  the ``max_step`` cap, acceptance, its ``val`` accuracy); the one-shot TVS, L1 and random (3 seeds)
  sparsities at every target; the test accuracy of L1 at the first target after recalibrating the BN
  means. Not IterTVSPrune's later steps or any other test accuracy (a 10,000-image pass each).
- ``tvsprune_resnet56.json``: the L1 and random (3 seeds) sparsities at the first target.
- ``tvsprune_resnet20_paper.json`` (the paper-recipe ResNet-20, notebook 04's recipe section): the L1 and
  random (3 seeds) sparsities at the first target.
- ``repair_resnet56.json`` (notebook 06's stored curves): step 1 of each criterion's order (channels,
  parameters, FLOPs, placement) for every repair cell; the test accuracy of DFPC's step 1 with the BN means
  re-estimated on ``dist`` (through ``repair_pruned``; the compensation's numerics are checked against the closed
  form in ``tests/test_repair.py``: re-evaluating a compensated step here would add a minute). The other steps
  only for consistency (drops, summaries, timed steps).
- ``ldiff_resnet56_resnet20.json``: on ResNet-20, the first three layers' scores, LDIFF and seed-0
  drop on ``val[1000]``, and the base accuracy. On ResNet-56 only consistency (LDIFF from the stored
  scores, Spearman and p-value from the stored rows).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import statistics
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

import pruning_lib as pl
from pruning_lib.course.checkpoints import load_checkpoint
from pruning_lib.graph import discover
from pruning_lib.course.data import default_data_dir, load_split
from pruning_lib.scoring.ldiff import ldiff, permutation_pvalue, spearman
from pruning_lib.course.training import evaluate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = default_data_dir() / "results"
ACC_IMAGES = 1            # accuracies may differ by this many images of their split (near-tie flips)
SCORE_REL = 1e-5          # filter scores and LDIFF: float32 activations summed in another order
STRUCTURE = ("step", "channels_removed", "parameters", "flops")          # compared exactly

# file -> the steps whose structure is recomputed, and the curves (all when None)
# (3 on ResNet-56: its blocks within a stage have equal shapes, so two steps of non-coupled channels can
# give the same counts from different layers; dropping DFPC's BN factor shows only from step 3 there)
DFPC_FILES = {"dfpc_resnet56.json": (3, None), "dfpc_resnet56_align8.json": (3, None),
              "dfpc_resnet56_finetune.json": (3, None), "dfpc_cifar_resnet50.json": (1, None),
              "dfpc_resnet20.json": (3, None), "dfpc_resnet20_paper.json": (3, None)}
DFPC_ACCURACY = [("dfpc_resnet56.json", "DFPC (coupled)", 1),            # (file, curve, step) re-evaluated
                 ("dfpc_resnet20.json", "DFPC (coupled)", 1), ("dfpc_resnet20.json", "L1", 3),
                 ("dfpc_resnet20_paper.json", "DFPC (coupled)", 2)]
TVS_FILES = {"tvsprune_resnet20.json": None, "tvsprune_resnet56.json": 1,   # baseline targets checked (None: all)
             "tvsprune_resnet20_paper.json": 1}
REPAIR_FILES = {"repair_resnet56.json": [("dfpc", "bn", 1)]}   # (criterion, repair, step) re-evaluated
LDIFF_FILE = "ldiff_resnet56_resnet20.json"
LDIFF_RERUN = ("resnet20", 3)                                           # model, its first n layers rerun
CHECKED = set(DFPC_FILES) | set(TVS_FILES) | set(REPAIR_FILES) | {LDIFF_FILE}


# --------------------------------------------------------------------------- helpers and fixtures

@cache
def script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (the code that wrote the results)."""
    spec = importlib.util.spec_from_file_location(f"_stored_results_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@cache
def stored(name: str) -> dict:
    """``data/results/<name>`` as read (one parse per module; never modified)."""
    return json.loads((RESULTS / name).read_text())


def within_images(got: float, want: float, images: int, n: int = ACC_IMAGES) -> bool:
    """Two accuracies (in %) on ``images`` images differ by at most ``n`` images."""
    return abs(got - want) <= 100.0 * n / images + 1e-9


@pytest.fixture(scope="module")
def checkpoint():
    """``checkpoint(arch)`` -> (model, meta), each shipped checkpoint loaded once for the module."""
    loaded: dict = {}

    def get(arch: str):
        if arch not in loaded:
            loaded[arch] = load_checkpoint(default_data_dir() / "checkpoints" / f"{arch}.pt")
        return loaded[arch]
    return get


@pytest.fixture(scope="module")
def split(checkpoint):
    """``split(name, arch)``: a split of the CIFAR-10 copy the checkpoint was trained on."""
    def get(name: str, arch: str):
        return load_split(name, copy=checkpoint(arch)[1]["data_copy"])
    return get


def dfpc_settings(name: str) -> argparse.Namespace:
    """The settings a DFPC results file records, over the script's defaults (older files lack newer options)."""
    a = script("dfpc_experiments").parser().parse_args([])
    vars(a).update(stored(name)["settings"])
    return a


@pytest.fixture(scope="module")
def dfpc_curve(checkpoint):
    """``dfpc_curve(file, label)``: the first steps of a stored curve rerun without accuracy. Reruns
    with equal settings are shared (the fine-tune file repeats ``dfpc_resnet56.json``'s curves)."""
    runs: dict = {}

    def get(name: str, label: str):
        a = dfpc_settings(name)
        key = (a.model, a.step_fraction, a.max_fraction, a.align, label, DFPC_FILES[name][0])
        if key not in runs:
            runs[key] = script("dfpc_experiments").prune_curve(checkpoint(a.model)[0], label, a, None,
                                                               max_steps=DFPC_FILES[name][0], progress=False)
        return runs[key]
    return get


def tvs_settings(name: str) -> argparse.Namespace:
    """The arguments of the command a TVSPrune results file records."""
    return script("tvsprune_experiments").parser().parse_args(shlex.split(stored(name)["command"])[2:])


def tvs_target(a: argparse.Namespace, row: dict) -> float:
    """The target sparsity (fraction) a stored row was run at."""
    match = [t for t in script("tvsprune_experiments").target_sparsities(a) if round(100 * t, 2) == row["target_%"]]
    assert len(match) == 1, f"row target {row['target_%']} % is not one of the command's targets"
    return match[0]


@pytest.fixture(scope="module")
def tvs_first_step(checkpoint, split):
    """IterTVSPrune on ResNet-20 cut after its first iteration, and the scores it estimated first
    (the script's one-shot TVS scores: the same model, split and settings)."""
    name = "tvsprune_resnet20.json"
    a = tvs_settings(name)
    model, _ = checkpoint(a.model)
    seen = []
    res = script("tvsprune_experiments").iter_tvs(
        model, split("dist", a.model), split("val", a.model), tvs_target(a, stored(name)["rows"][0]), a,
        max_iterations=1, on_scores=lambda m, s: seen.append(s))
    return res, seen[0]


# --------------------------------------------------------------------------- every file is checked

def test_every_results_file_is_checked():
    """A new results file must get its recomputation here before a notebook may claim it."""
    files = {p.name for p in RESULTS.glob("*.json")}
    assert files == CHECKED, (f"data/results/ has {sorted(files - CHECKED)} unchecked and "
                              f"{sorted(CHECKED - files)} missing: add them to tests/test_stored_results.py")


# --------------------------------------------------------------------------- DFPC (notebook 02)

def _dfpc_cases():
    for name, (_, labels) in DFPC_FILES.items():
        for label in labels or stored(name)["methods"]:
            yield pytest.param(name, label, id=f"{name}:{label}")


@pytest.mark.parametrize("name,label", list(_dfpc_cases()))
def test_dfpc_first_steps_match_the_stored_curve(dfpc_curve, checkpoint, name, label):
    """Channels removed, parameters and FLOPs of the first steps, exactly: any change to the removal
    order, a criterion's scores, the eligible DFCs, the step size or ``align`` changes them."""
    entry = stored(name)["methods"][label]
    crit, coupled = script("dfpc_experiments").METHODS[label]
    assert (entry["criterion"], entry["coupled"]) == (crit, coupled)
    r = dfpc_curve(name, label)
    info = r.report.info
    assert (info["channels_per_step"], info["eligible_channels"]) == (
        entry["channels_per_step"], entry["eligible_channels"]), f"{name} {label}: (channels per step, eligible)"
    n = min(DFPC_FILES[name][0], len(entry["steps"]) - 1) + 1
    got = [{k: row[k] for k in STRUCTURE} for row in r.report.rows()[:n]]
    want = [{k: row[k] for k in STRUCTURE} for row in entry["steps"][:n]]
    assert got == want, f"{name} {label}: the rerun's first steps differ from the stored ones"
    _, meta = checkpoint(stored(name)["model"])
    assert stored(name)["checkpoint_test_accuracy"] == meta["test_accuracy"], (
        f"{name} was computed on another checkpoint than data/checkpoints/{stored(name)['model']}.pt")


@pytest.mark.parametrize("name,label,step", DFPC_ACCURACY)
def test_dfpc_step_accuracy_matches(dfpc_curve, split, name, label, step):
    """The stored accuracy of a pruned step, re-evaluated on the split the file names."""
    a = dfpc_settings(name)
    test = script("dfpc_experiments").accuracy_split(a.test_subset, copy=split("test", a.model).copy)
    assert test.name == stored(name)["accuracy_split"]
    acc = evaluate(dfpc_curve(name, label).model_at(step), test)
    want = stored(name)["methods"][label]["steps"][step]["accuracy"]
    assert within_images(acc, want, len(test)), f"{name} {label} step {step}: {acc} % now, {want} % stored"


def test_dfpc_finetune_file_repeats_the_main_curves():
    """Same settings, so the same steps (the fine-tune file adds only the fine-tunes and fewer timings)."""
    main, tuned = stored("dfpc_resnet56.json"), stored("dfpc_resnet56_finetune.json")
    differ = {k for k in main["settings"] if main["settings"][k] != tuned["settings"][k]}
    assert differ <= {"methods", "latency_repeats", "latency_every", "finetune_epochs", "out"}, differ
    for label, entry in tuned["methods"].items():
        def strip(rows):
            return [{k: v for k, v in r.items() if k not in ("latency_ms", "speedup")} for r in rows]
        assert strip(entry["steps"]) == strip(main["methods"][label]["steps"]), label


@pytest.mark.parametrize("name", list(DFPC_FILES))
def test_dfpc_summaries_follow_from_the_stored_rows(name):
    """The stop and the within-N-points summaries the notebook quotes follow from the file's own rows."""
    best_within = script("dfpc_experiments").best_within
    a = dfpc_settings(name)
    for label, entry in stored(name)["methods"].items():
        rows = entry["steps"]
        drops = [r["accuracy_drop"] for r in rows]
        assert all(d <= a.stop_drop for d in drops[:-1]), label
        if entry["stop_reason"] == f"accuracy drop above {a.stop_drop} points":
            assert drops[-1] > a.stop_drop and rows[-1]["note"] == "beyond the accuracy-drop target", label
        for r in rows:
            assert r["accuracy_drop"] == pytest.approx(rows[0]["accuracy"] - r["accuracy"], abs=1e-9)
            assert r["flops_reduction"] == pytest.approx(rows[0]["flops"] / r["flops"], rel=1e-12)
        for drop in (2.0, 5.0, 10.0):
            best = best_within(rows, drop)
            summary = entry[f"within_{drop:g}_points"]
            assert (best is None) == (summary is None), (label, drop)
            if best is not None:
                assert summary["step"] == best["step"] and summary["accuracy"] == best["accuracy"], (label, drop)
                assert summary["params_reduction"] == pytest.approx(rows[0]["parameters"] / best["parameters"])


# --------------------------------------------------------------------------- TVSPrune (notebook 04)

def test_tvs_command_reruns_with_the_same_settings():
    """The ``command`` a TVSPrune file records parses back to every setting that changes its results
    (it is what the checks below rerun)."""
    s = script("tvsprune_experiments")
    ignored = ("threads", "out")
    for argv in ([], ["--model", "resnet56", "--device", "cuda"],
                 ["--targets", "0.01", "0.05", "--seeds", "2", "--max-step", "0.02", "--checkpoint", "my model.pt"]):
        a = s.parser().parse_args(argv)
        b = s.parser().parse_args(shlex.split(s.command(a))[2:])
        assert {k: v for k, v in vars(a).items() if k not in ignored} == \
            {k: v for k, v in vars(b).items() if k not in ignored}, s.command(a)
    assert s.command(s.parser().parse_args(["--model", "resnet56"])) == stored("tvsprune_resnet56.json")["command"]


def test_iter_tvs_first_step_matches_every_stored_run(tvs_first_step, split):
    """IterTVSPrune's first step (scores on ``dist``, the eps rule, the ``max_step`` cap, acceptance on
    ``val``): channels, parameters and FLOPs exactly, the ``val`` accuracies to one image."""
    name = "tvsprune_resnet20.json"
    res, _ = tvs_first_step
    val = split("val", res.report.model)
    a = tvs_settings(name)
    assert res.iterations == 1 and res.attempts[0].accepted and len(res.report.steps) == 2, (
        f"IterTVSPrune's first try was {res.attempts[0]}; every stored run (no accuracy floor) accepted it")
    for row in stored(name)["rows"]:
        report = row["report"]
        assert report["info"] == {**res.report.info, "target_sparsity": tvs_target(a, row)}
        assert report["accuracy_split"] == val.name
        for got, want in zip(res.report.to_dict()["steps"], report["steps"][:2]):
            assert {k: got[k] for k in STRUCTURE + ("note",)} == {k: want[k] for k in STRUCTURE + ("note",)}, (
                f"{name} target {row['target_%']} %: IterTVSPrune's step {want['step']} differs")
            assert within_images(got["accuracy"], want["accuracy"], len(val)), (
                f"{name} target {row['target_%']} %: IterTVSPrune's step {want['step']} scores "
                f"{got['accuracy']} % on {val.name} now, {want['accuracy']} % stored")


def test_tvs_oneshot_sparsities_match(tvs_first_step, checkpoint):
    """TVSPrune's ranking at every target: the one-shot prune's exact sparsity (which channels of
    which DFCs go decides the parameter count)."""
    name = "tvsprune_resnet20.json"
    a = tvs_settings(name)
    model, _ = checkpoint(a.model)
    _, scores = tvs_first_step
    for row in stored(name)["rows"]:
        got = round(100 * pl.prune_to_sparsity(model, pl.Target(parameters=tvs_target(a, row)), criterion=scores).sparsity, 3)
        assert got == row["tvs_oneshot"]["sparsity_%"], (
            f"{name} target {row['target_%']} %: one-shot TVS sparsity {got} % now, "
            f"{row['tvs_oneshot']['sparsity_%']} % stored")


@pytest.mark.parametrize("name", list(TVS_FILES))
def test_tvs_baseline_sparsities_match(checkpoint, name):
    """L1 and random scores (3 seeds) with TVSPrune's allocation rule: exact sparsities."""
    a = tvs_settings(name)
    data = stored(name)
    assert (data["max_step"], data["seeds"]) == (a.max_step, a.seeds)
    path = script("tvsprune_experiments").checkpoint_path(a).relative_to(ROOT)
    model, meta = checkpoint(path.relative_to("data/checkpoints").with_suffix("").as_posix())
    assert data["checkpoint"] == str(path)
    assert data["checkpoint_test_accuracy"] == meta["test_accuracy"]
    assert data["bn_cutout"] == script("tvsprune_experiments").bn_cutout(meta)
    graph = discover(model, (1, 3, 32, 32))
    baseline = script("tvsprune_experiments").baseline
    for row in data["rows"][:TVS_FILES[name]]:
        target = tvs_target(a, row)
        got = round(100 * baseline(model, graph, "l1", target).sparsity, 3)
        assert got == row["l1"]["sparsity_%"], (
            f"{name} target {row['target_%']} %: L1 sparsity {got} % now, {row['l1']['sparsity_%']} % stored")
        for run in row["random"]["runs"]:
            got = round(100 * baseline(model, graph, "random", target, seed=run["seed"]).sparsity, 3)
            assert got == run["sparsity_%"], (f"{name} target {row['target_%']} %: random (seed {run['seed']}) "
                                              f"sparsity {got} % now, {run['sparsity_%']} % stored")


def test_bn_recalibration_accuracy_matches(checkpoint, split):
    """BN recalibration as the script applies it (means only, augmented ``dist``): test accuracy of the
    L1-pruned ResNet-20 at the first target, to one image of the 10,000."""
    name = "tvsprune_resnet20.json"
    a = tvs_settings(name)
    s = script("tvsprune_experiments")
    model, meta = checkpoint(a.model)
    row = stored(name)["rows"][0]
    pruned = s.baseline(model, discover(model, (1, 3, 32, 32)), "l1", tvs_target(a, row)).model
    recal = s.recalibrate(pruned, split("dist", a.model), s.bn_cutout(meta), variance=False)
    test = split("test", a.model)
    acc = evaluate(recal, test)
    want = row["l1_bn_mean"]["test_accuracy"]
    assert within_images(acc, want, len(test)), f"{acc} % now, {want} % stored"


@pytest.mark.parametrize("name", list(TVS_FILES))
def test_tvs_drops_follow_from_the_stored_accuracies(name):
    """Every drop in the table is its accuracy minus the base; random's mean and sd are of its runs."""
    data = stored(name)
    base = data["base_test_accuracy"]
    for row in data["rows"]:
        for key, e in row.items():
            if isinstance(e, dict) and "test_accuracy" in e:
                assert e["drop"] == round(e["test_accuracy"] - base, 2), (row["target_%"], key)
            if isinstance(e, dict) and "runs" in e:
                drops = [r["drop"] for r in e["runs"]]
                assert all(r["drop"] == round(r["test_accuracy"] - base, 2) for r in e["runs"])
                assert e["drop"] == round(statistics.mean(drops), 2), (row["target_%"], key)
                assert e["drop_std"] == round(statistics.stdev(drops), 2), (row["target_%"], key)
                assert e["sparsity_%"] == round(statistics.mean(r["sparsity_%"] for r in e["runs"]), 3)


# --------------------------------------------------------------------------- repair (notebook 06)

@pytest.fixture(scope="module")
def repair_first_step(checkpoint, split):
    """``repair_first_step(file, criterion)``: the criterion's order rerun with the file's settings, cut after
    step 1, and the calibration samples it was scored on (the ``dist`` split)."""
    runs: dict = {}

    def get(name: str, crit: str):
        a = script("repair_experiments").settings_of(stored(name))
        assert a.calibration == "dist", f"{name}: only dist-calibrated files are rerun here"
        if (name, crit) not in runs:
            data = split("dist", a.model)
            runs[name, crit] = (script("repair_experiments").prune_order(checkpoint(a.model)[0], crit, data, a,
                                                                         max_steps=1), data)
        return runs[name, crit]
    return get


def _repair_cases():
    for name in REPAIR_FILES:
        for crit in dict.fromkeys(c["criterion"] for c in stored(name)["cells"].values()):
            # hifi scores every reader on all 2,000 calibration images (minutes): `make test-slow`
            yield pytest.param(name, crit, id=f"{name}:{crit}", marks=[pytest.mark.slow] if crit == "hifi" else [])


@pytest.mark.parametrize("name,crit", list(_repair_cases()))
def test_repair_first_step_matches_every_cell(repair_first_step, checkpoint, name, crit):
    """Step 1 of a criterion's order (channels, parameters, FLOPs exactly, and where the removed channels sit)
    is the step every repair cell of that criterion starts from."""
    data = stored(name)
    _, meta = checkpoint(data["model"])
    assert data["checkpoint_test_accuracy"] == meta["test_accuracy"], f"{name}: another checkpoint"
    run, _ = repair_first_step(name, crit)
    got = {k: v for k, v in run.report.rows()[1].items() if k in STRUCTURE}
    placement = script("repair_experiments").placement(run.graph, run.removals(1))
    for key, cell in data["cells"].items():
        if cell["criterion"] == crit:
            want = cell["steps"][0]
            assert {k: want[k] for k in STRUCTURE} == got, f"{name} {key}: step 1 differs from the rerun"
            assert want["placement"] == placement, f"{name} {key}: step 1 removes other channels"


@pytest.mark.slow          # a repair on 2,000 images and 10,000 test images evaluated: a minute (make test-slow)
@pytest.mark.parametrize("name,crit,rep,step", [(n, *c) for n, cases in REPAIR_FILES.items() for c in cases])
def test_repair_step_accuracy_matches(repair_first_step, checkpoint, split, name, crit, rep, step):
    """A repaired step re-evaluated on the split the file names, to one image."""
    a = script("repair_experiments").settings_of(stored(name))
    run, data = repair_first_step(name, crit)
    fixed = script("repair_experiments").repaired_at(checkpoint(a.model)[0], run, step, rep, data, a)
    test = split("test", a.model)
    test = test.subset(a.test_subset, seed=0) if a.test_subset else test
    assert test.name == stored(name)["accuracy_split"]
    want = next(r for r in stored(name)["cells"][f"{crit}|{rep}"]["steps"] if r["step"] == step)["accuracy"]
    acc = evaluate(fixed, test)
    assert within_images(acc, want, len(test)), f"{name} {crit}|{rep} step {step}: {acc} % now, {want} % stored"


def test_repair_script_scores_cache_gives_the_same_order(tmp_path, checkpoint, split, monkeypatch):
    """A resumed run reads the criterion's scores from the cache beside its file and prunes in the same order as a
    fresh one; a cache written with other settings is not used."""
    s = script("repair_experiments")
    a = s.parser().parse_args(["--model", "resnet20"])
    model, data, cache = checkpoint("resnet20")[0], split("dist", "resnet20"), tmp_path / "r.l1-scores.pt"

    def order(run):
        return [sorted((d.index, sorted(c)) for d, c in run.removals(k).items() if c) for k in (1, 2)]
    fresh = order(s.prune_order(model, "l1", data, a, max_steps=2))
    assert order(s.prune_order(model, "l1", data, a, max_steps=2, cache=cache)) == fresh and cache.exists()

    def scored_again(name):
        raise AssertionError("scored again")
    monkeypatch.setattr(s, "get_criterion", scored_again)
    assert order(s.prune_order(model, "l1", data, a, max_steps=2, cache=cache)) == fresh
    a.calibration = "synth"
    with pytest.raises(AssertionError, match="scored again"):
        s.prune_order(model, "l1", data, a, max_steps=2, cache=cache)


@pytest.mark.parametrize("name", list(REPAIR_FILES))
def test_repair_summaries_follow_from_the_stored_rows(name):
    """Drops, reductions, each cell's stop and its within-4-points summary (the notebook's table) follow from
    the file's own rows; the repairs of one criterion share its steps and every step is timed."""
    s = script("repair_experiments")
    data = stored(name)
    a = s.settings_of(data)
    for key, cell in data["cells"].items():
        rows = cell["steps"]
        assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), key
        assert all(r["accuracy_drop"] <= a.stop_drop for r in rows[:-1]), f"{key}: the curve goes on past its stop"
        for r in rows:
            assert r["accuracy_drop"] == pytest.approx(data["accuracy"] - r["accuracy"], abs=1e-9), key
            assert r["flops_reduction"] == pytest.approx(data["flops"] / r["flops"], abs=1e-4), key
            assert r["params_reduction"] == pytest.approx(data["parameters"] / r["parameters"], abs=1e-4), key
        best = s.best_within(rows, 4.0)
        lat = data["latency"][cell["criterion"]]
        assert (best is None) == (cell["within_4_points"] is None), key
        if best is not None:
            assert cell["within_4_points"] == dict(best, speedup_batch64=lat["batch64"][str(best["step"])],
                                                   speedup_batch1=lat["batch1"][str(best["step"])]), key
        for other in data["cells"].values():
            if other["criterion"] == cell["criterion"]:
                shared = min(len(rows), len(other["steps"]))
                assert [{k: r[k] for k in STRUCTURE} for r in rows[:shared]] == \
                    [{k: r[k] for k in STRUCTURE} for r in other["steps"][:shared]], key
        assert {str(r["step"]) for r in rows} <= set(lat["batch64"]) & set(lat["batch1"]), f"{key}: untimed steps"


# --------------------------------------------------------------------------- LDIFF (notebook 03)

@pytest.mark.parametrize("model_name", list(stored(LDIFF_FILE)))
def test_ldiff_rows_follow_from_their_scores(model_name):
    """Each row's LDIFF is the Gini of its stored scores; Spearman and the p-value follow from the rows."""
    r = stored(LDIFF_FILE)[model_name]
    for row in r["rows"]:
        assert row["ldiff"] == pytest.approx(ldiff(row["scores"]), rel=1e-12), row["layer"]
        assert row["mean_score"] == pytest.approx(statistics.mean(row["scores"]), rel=1e-12), row["layer"]
        assert row["mean_drop"] == pytest.approx(statistics.mean(row["drops"]), abs=1e-9), row["layer"]
    x, y = [row["ldiff"] for row in r["rows"]], [row["mean_drop"] for row in r["rows"]]
    assert r["spearman"] == pytest.approx(spearman(x, y), abs=1e-12)
    assert r["p_value"] == pytest.approx(permutation_pvalue(x, y), abs=1e-12)


def test_ldiff_rerun_matches_the_first_layers(checkpoint):
    """The experiment rerun on ResNet-20's first layers with seed 0: scores, LDIFF, the random-pruning
    drop (two accuracies, so two images of tolerance) and the base accuracy on ``val[1000]``."""
    model_name, n = LDIFF_RERUN
    r = stored(LDIFF_FILE)[model_name]
    argv = [model_name, "--fraction", str(r["fraction"]), "--seeds", *map(str, r["seeds"]),
            "--distance", r["distance"], "--eval-images", str(r["eval_images"])]
    if r["stats_per_class"] is not None:
        argv += ["--stats-per-class", str(r["stats_per_class"])]
    args = script("ldiff_experiment").parser().parse_args(argv)
    rows = r["rows"][:n]
    model, _ = checkpoint(model_name)
    got = script("ldiff_experiment").run(model, model_name, args, seeds=[r["seeds"][0]],
                                         layers=[row["layer"] for row in rows], progress=False)
    assert (got.eval_split, got.stats_split, got.excluded) == (r["eval_split"], r["stats_split"], r["excluded"])
    assert within_images(got.base_accuracy, r["base_accuracy"], r["eval_images"])
    for g, w in zip(got.rows, rows):
        assert (g.layer, g.bn, g.dfc, g.channels, g.pruned) == (w["layer"], w["bn"], w["dfc"], w["channels"], w["pruned"])
        assert g.scores == pytest.approx(w["scores"], rel=SCORE_REL), g.layer
        assert g.ldiff == pytest.approx(w["ldiff"], rel=SCORE_REL), g.layer
        assert abs(g.drops[0] - w["drops"][0]) <= 100.0 * 2 * ACC_IMAGES / r["eval_images"] + 1e-9, (
            f"{g.layer}: drop {g.drops[0]} now, {w['drops'][0]} stored")

"""Typed per-step records of a pruning run, printable as a table and plottable.

Both methods of the course (DFPC's global pruning and IterTVSPrune) return a :class:`PruningReport`:
one :class:`PruningStep` per accepted step, the unpruned model first (step 0).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class PruningStep:
    """The model after one pruning step. ``accuracy`` in %, on the split named in the report;
    ``latency_ms`` and ``speedup`` are measured (None when not measured at that step)."""
    step: int
    channels_removed: int
    parameters: int
    flops: int
    accuracy: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    note: str = ""


@dataclass
class PruningReport:
    """A pruning run: the method, the model, the split accuracy was measured on, and its steps."""
    method: str
    model: str
    accuracy_split: str = ""
    steps: list[PruningStep] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def add(self, step: PruningStep) -> None:
        self.steps.append(step)

    @property
    def base(self) -> PruningStep:
        if not self.steps:
            raise ValueError("the report has no steps yet")
        return self.steps[0]

    @property
    def final(self) -> PruningStep:
        if not self.steps:
            raise ValueError("the report has no steps yet")
        return self.steps[-1]

    def rows(self) -> list[dict]:
        """One plain dict per step, with the reductions relative to step 0 added."""
        base = self.base
        out = []
        for s in self.steps:
            r = asdict(s)
            r["param_sparsity_%"] = 100.0 * (1 - s.parameters / base.parameters)
            r["flops_reduction"] = base.flops / s.flops if s.flops else float("nan")
            if s.accuracy is not None and base.accuracy is not None:
                r["accuracy_drop"] = base.accuracy - s.accuracy
            out.append(r)
        return out

    def frame(self):
        """The steps as a pandas DataFrame (one row per step), with method and model columns."""
        import pandas as pd
        df = pd.DataFrame(self.rows())
        df.insert(0, "method", self.method)
        df.insert(1, "model", self.model)
        return df

    def table(self, digits: int = 2) -> str:
        """A plain-text table of the steps (rounded: stable to print in checked notebooks)."""
        cols = ["step", "channels_removed", "parameters", "param_sparsity_%", "flops_reduction",
                "accuracy", "accuracy_drop", "speedup"]
        rows = self.rows()
        cols = [c for c in cols if any(r.get(c) is not None for r in rows)]

        def fmt(v):
            if v is None:
                return "-"
            return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

        cells = [[fmt(r.get(c)) for c in cols] for r in rows]
        width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        head = f"{self.method} on {self.model}" + (f" (accuracy on {self.accuracy_split})" if self.accuracy_split else "")
        lines = [head, "  ".join(c.rjust(w) for c, w in zip(cols, width))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, width)) for row in cells]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, x: str = "speedup", y: str = "accuracy", ax=None, label: str | None = None, **kw):
        """One curve of the run (default accuracy against measured speedup) with seaborn."""
        import matplotlib.pyplot as plt
        import seaborn as sns
        df = self.frame().dropna(subset=[x, y])
        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        sns.lineplot(data=df, x=x, y=y, marker="o", ax=ax, label=label or self.method, **kw)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(y.replace("_", " ") + (f" ({self.accuracy_split})" if y == "accuracy" and self.accuracy_split else ""))
        return ax

    def to_dict(self) -> dict:
        return {"method": self.method, "model": self.model, "accuracy_split": self.accuracy_split,
                "info": self.info, "steps": [asdict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict) -> "PruningReport":
        names = {f.name for f in fields(PruningStep)}
        steps = [PruningStep(**{k: v for k, v in s.items() if k in names}) for s in d.get("steps", [])]
        return cls(d["method"], d["model"], d.get("accuracy_split", ""), steps, d.get("info", {}))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (read back with :meth:`load`)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, key: str | None = None) -> "PruningReport":
        """The report stored in ``path``: a file :meth:`save` wrote, or one run of a results file
        (``data/results/*.json``) by its key in :meth:`load_all` (needed when the file holds several)."""
        reports = cls.load_all(path)
        if key is None and len(reports) == 1:
            return next(iter(reports.values()))
        if key not in reports:
            raise KeyError(f"{path} holds {len(reports)} pruning runs; pass key= one of {list(reports)}")
        return reports[key]

    @classmethod
    def load_all(cls, path: str | Path) -> dict[str, "PruningReport"]:
        """Every pruning run stored in a JSON file, by key: a saved report (its method), an experiment
        script's DFPC results (``methods``: one per method label, e.g. ``"DFPC (coupled)"``), TVSPrune
        results (``rows``: ``"target 2.4%"`` for each target sparsity) or repair results (``cells``: one per
        ``"criterion|repair"``, with the unpruned model as step 0 and the batch-64 speedups)."""
        d = json.loads(Path(path).read_text())
        if isinstance(d, dict) and "steps" in d and "method" in d:
            return {d["method"]: cls.from_dict(d)}
        if isinstance(d, dict) and isinstance(d.get("methods"), dict):
            return {label: cls.from_dict({"method": label, "model": d.get("model", ""),
                                          "accuracy_split": d.get("accuracy_split", ""), "steps": run["steps"],
                                          "info": {k: v for k, v in run.items() if k != "steps"}})
                    for label, run in d["methods"].items()}
        if isinstance(d, dict) and isinstance(d.get("rows"), list) and all("report" in r for r in d["rows"]):
            return {f"target {r['target_%']}%": cls.from_dict(r["report"]) for r in d["rows"]}
        if isinstance(d, dict) and isinstance(d.get("cells"), dict):
            return {key: cls._from_repair_cell(d, cell) for key, cell in d["cells"].items()}
        if isinstance(d, dict) and d and all(isinstance(v, dict) and "rows" in v for v in d.values()):
            raise ValueError(f"{path} holds LDIFF experiments (per-layer rows), not pruning runs; read them "
                             "with json.load (see pruning_lib.course.ldiff_experiment.LdiffResult)")
        raise ValueError(f"{path} holds no pruning report: expected a saved PruningReport, or a results file "
                         "with 'methods' (DFPC), 'rows' with reports (TVSPrune) or 'cells' (repair)")

    @classmethod
    def _from_repair_cell(cls, d: dict, cell: dict) -> "PruningReport":
        """One cell of ``scripts/repair_experiments.py``'s file: its steps after the unpruned model (step 0)."""
        b64 = d.get("latency", {}).get(cell["criterion"], {}).get("batch64", {})
        base = {"step": 0, "channels_removed": 0, "parameters": d["parameters"], "flops": d["flops"],
                "accuracy": d["accuracy"], "speedup": 1.0 if b64 else None}
        steps = [base] + [dict(s, speedup=b64.get(str(s["step"]))) for s in cell["steps"]]
        return cls.from_dict({"method": f"{cell['criterion']}, repair {cell['repair']}", "model": d.get("model", ""),
                              "accuracy_split": d.get("accuracy_split", ""), "steps": steps,
                              "info": {k: v for k, v in cell.items() if k != "steps"}})


__all__ = ["PruningStep", "PruningReport"]

"""report: rows, the printed table and the dict round trip of a pruning run."""
import pytest

from pruning_lib.pruning.report import PruningReport, PruningStep


def report():
    return PruningReport("dfpc", "resnet20", "test", [
        PruningStep(0, 0, 1000, 2000, 90.0, 10.0, 1.0),
        PruningStep(1, 10, 750, 1000, 87.5, 6.0, 1.6),
        PruningStep(2, 20, 500, 800, 80.0)])


def test_rows_relative_to_the_first_step():
    rows = report().rows()
    assert [r["param_sparsity_%"] for r in rows] == [0.0, 25.0, 50.0]
    assert [r["flops_reduction"] for r in rows] == [1.0, 2.0, 2.5]
    assert [r["accuracy_drop"] for r in rows] == [0.0, 2.5, 10.0]


def test_table_prints_rounded_values_and_dashes():
    t = report().table()
    assert t.splitlines()[0] == "dfpc on resnet20 (accuracy on test)"
    assert "25.00" in t and "2.50" in t and "1.60" in t
    assert t.splitlines()[-1].split()[-1] == "-"          # speedup not measured at step 2


def test_round_trip_and_frame():
    r = report()
    assert PruningReport.from_dict(r.to_dict()) == r
    df = r.frame()
    assert list(df["method"]) == ["dfpc"] * 3 and len(df) == 3


def test_empty_report_says_so():
    with pytest.raises(ValueError, match="no steps"):
        PruningReport("x", "y").final


def test_every_results_file_loads_as_reports(tmp_path):
    from pathlib import Path
    import pytest
    results = sorted((Path(__file__).resolve().parent.parent / "data" / "results").glob("*.json"))
    assert results
    for f in results:
        if f.name.startswith("ldiff_"):
            with pytest.raises(ValueError, match="LDIFF"):
                PruningReport.load_all(f)
            continue
        reports = PruningReport.load_all(f)
        assert reports and all(r.steps and r.base.step == 0 and r.base.parameters > 0 for r in reports.values())
        key = next(iter(reports))
        assert PruningReport.load(f, key=key).steps == reports[key].steps
    r = next(iter(PruningReport.load_all(results[0]).values()))
    assert PruningReport.load(r.save(tmp_path / "r.json")).to_dict() == r.to_dict()

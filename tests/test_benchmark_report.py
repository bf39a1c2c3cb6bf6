"""benchmarks/report.py: README tables and charts from pytest-benchmark JSON."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

_SPEC = importlib.util.spec_from_file_location("report", Path(__file__).resolve().parent.parent / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report)


def _bench(group, provider, median, peak, **info):
    return {"group": group, "name": f"test[{provider}]", "stats": {"median": median},
            "extra_info": {"provider": provider, "peak_mem_bytes": peak, **info}}


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    path = tmp_path / "benchmarks" / "results" / "cpu" / "bench.json"
    path.parent.mkdir(parents=True)
    benchmarks = [_bench("op fwd bank", "eager", 0.4, 2**28),
                  _bench("op fwd bank", "webda-cpu", 0.2, 2**25, paired_speedup=2.25),
                  _bench("op fwd bank", "compile", 0.5, 2**28)]
    for n in (2**14, 2**16):
        benchmarks += [_bench("op sweep", "eager", n * 1e-6, n * 1024, n_bank=n),
                       _bench("op sweep", "webda-cpu", n * 5e-7, 2**20, n_bank=n)]
    path.write_text(json.dumps({"webda": {"device": "test cpu", "commit": "abc"}, "benchmarks": benchmarks}))
    return path


def test_table_ratios_and_charts(results):
    meta, groups = report.load_rows(results)
    report.bar_chart(results, meta, groups)
    report.sweep_chart(results, meta)
    assert results.with_name("bench-speedup.png").stat().st_size > 0
    assert results.with_name("bench-sweep.png").stat().st_size > 0
    text = report.markdown_for(results, meta, groups)
    # vs eager: the paired ratio; vs compile: the ratio of medians
    assert "| op fwd bank | webda-cpu | 200.00 ms | 2.25x | 2.50x | - | 32.0 MiB |" in text
    assert "| op fwd bank | compile | 500.00 ms | 0.80x | - | - | 256.0 MiB |" in text
    assert "bench-sweep.png" in text and "bench-speedup.png" in text


def test_sweep_points_sorted_by_bank(results):
    points = report.sweep_points(results)
    assert [n for n, _, _ in points["webda-cpu"]] == [2**14, 2**16]
    assert points["eager"][1] == (2**16, 2**16 * 1e-6, 2**16 * 1024)


def test_summary_one_line_per_op(results):
    meta, groups = report.load_rows(results)
    text = report.summary_for(results, meta, groups)
    # the bank group's paired ratio (2.25x) and the sweep group's ratio of medians (2.0x), one line for the op
    assert "- `op`: 2.00x to 2.25x (2 benchmarks)" in text
    assert text.count("\n- ") == 1


def test_check_reports_stale_files(results, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\nend\n")
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "RESULTS", results.parent.parent)
    monkeypatch.setattr(report, "RESULTS_README", results.parent.parent / "README.md")
    assert report.main(["--check"]) == 1
    assert report.main([]) == 0
    assert report.main(["--check"]) == 0
    assert "2.25x" in readme.read_text() and readme.read_text().startswith("intro\n")
    assert "| op fwd bank | webda-cpu |" in (results.parent.parent / "README.md").read_text()

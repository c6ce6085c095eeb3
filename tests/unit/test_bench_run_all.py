"""bench/run_all.py: a plain run (`make bench`) writes only untracked files; --readme (`make bench-readme`)
writes the committed record and README's table. The benchmark is a real subprocess (a stand-in script writing
the raw JSON a benchmark writes); git is asked what it ignores."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import run_all

ROOT = Path(__file__).resolve().parents[2]
README_BEFORE = "# Project\n\nintro\n\n<!-- bench:start -->\nold table\n<!-- bench:end -->\n\n## After\n"

STAND_IN = """
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("--out")
parser.add_argument("--runs")
args = parser.parse_args()
figure = {"value": 1.07, "unit": "ratio", "baseline": 41.0, "notes": "stand-in", "by_handler": {}}
with open(args.out, "w") as fh:
    json.dump({"api_cold_import_ratio_vs_minimal_fastapi": figure}, fh)
"""


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """run_all pointed at a README and a results folder in tmp_path, with one stand-in benchmark."""
    script = tmp_path / "stand_in_bench.py"
    script.write_text(STAND_IN)
    readme = tmp_path / "README.md"
    readme.write_text(README_BEFORE)
    bench = run_all.Benchmark("cold_import", str(script), ("--runs", "1"), ("--runs", "1"), 120)
    monkeypatch.setattr(run_all, "BENCHMARKS", [bench])
    monkeypatch.setattr(run_all, "README", readme)
    monkeypatch.setattr(run_all, "RESULTS", tmp_path / "results")
    return tmp_path


def test_a_plain_run_writes_the_last_run_and_leaves_readme_and_record_alone(sandbox: Path) -> None:
    assert run_all.main([]) == 0

    written = json.loads((sandbox / "results" / run_all.LAST_RUN).read_text())
    assert written["api_cold_import_ratio_vs_minimal_fastapi"]["value"] == 1.07
    assert written["benchmarks"]["cold_import"]["status"] == "ok"
    assert (sandbox / "README.md").read_text() == README_BEFORE
    assert not (sandbox / "results" / run_all.RECORD).exists()


def test_readme_run_writes_the_record_and_the_table(sandbox: Path) -> None:
    assert run_all.main(["--readme"]) == 0

    record = json.loads((sandbox / "results" / run_all.RECORD).read_text())
    assert record["api_cold_import_ratio_vs_minimal_fastapi"]["value"] == 1.07
    assert not (sandbox / "results" / run_all.LAST_RUN).exists()
    text = (sandbox / "README.md").read_text()
    assert "old table" not in text
    assert text.startswith("# Project\n\nintro\n\n<!-- bench:start -->\nMeasured by `make bench-readme` on ")
    assert text.endswith("<!-- bench:end -->\n\n## After\n")
    row = next(line for line in text.splitlines() if line.startswith("| cold import + first invoke"))
    assert "| 1.07 | minimal 41 ms;" in row


def test_readme_refuses_a_partial_run(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_all.main(["--readme", "--only", "cold_import"])
    assert exit_info.value.code == 2
    assert "--readme needs every benchmark" in capsys.readouterr().err
    assert (sandbox / "README.md").read_text() == README_BEFORE
    assert not (sandbox / "results").exists()


def test_git_ignores_what_a_plain_run_writes_and_tracks_the_record() -> None:
    results = run_all.ROOT / "bench" / "results"
    plain = [results / run_all.LAST_RUN, results / "raw" / "memory.json", results / "raw" / "memory.log"]
    plain.append(results / "memory.json")  # a benchmark run by hand with its default --out
    paths = [str(p.relative_to(ROOT)) for p in plain]
    record = str((results / run_all.RECORD).relative_to(ROOT))
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths, record], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert sorted(ignored.stdout.split()) == sorted(paths)
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", record], cwd=ROOT, capture_output=True, check=False)
    assert tracked.returncode == 0, "the README's record must stay committed"

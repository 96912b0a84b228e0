"""Every script in ``bench/`` still runs against the current library, at its smallest settings.

The benchmarks' numbers are not tested (timing belongs in ``bench/``, not in asserts); what is tested is
that each script runs to the end, prints its table with the rows asked for, writes valid JSON where it
writes any, and reports the correctness checks it makes (the KV cache and the cache-free path give the
same tokens). A script that rots when the library changes would otherwise only be found by the next
person to run it, which for ``bench/gpu.py`` is a session with a GPU and 15 minutes to spend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, skip_or_fail
from offline_web import CHROMIUM

BENCH = REPO_ROOT / "bench"

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str) -> str:
    """Run ``bench/<script>`` with one CPU thread; its stdout, after checking that it exited 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def table_rows(output: str, first_cell: str) -> list[list[str]]:
    """The cells of every Markdown table row of ``output`` whose first cell is ``first_cell`` (a mark
    after it, such as page_weight's ``**over 2 s**``, is ignored)."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].split(" **")[0] == first_cell:
            rows.append(cells)
    return rows


def test_gpu_bench_runs_reduced_on_the_cpu_and_writes_json(tmp_path: Path):
    out = tmp_path / "gpu.json"
    stdout = run_bench(
        "gpu.py", "--reduced", "--no-compile", "--steps", "1", "--warmup", "1", "--gen-repeats", "1",
        "--json", str(out),
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert results["mode"] == "reduced-cpu" and results["failed"] == [] and results["skipped"] == []
    train = {r["preset"]: r for r in results["items"] if r["item"] == "train"}
    generate = {r["preset"]: r for r in results["items"] if r["item"] == "generate"}
    assert set(train) == set(generate) == {"small", "gpt2"}
    for row in train.values():
        assert row["tokens_per_s"] > 0 and 0 < row["mfu_measured"] and row["compiled"] is False
    for row in generate.values():
        assert row["same_tokens"] is True, "the KV cache changed the greedy tokens"
        assert row["cache_tokens_per_s"] > 0 and row["no_cache_tokens_per_s"] > 0
    assert len(table_rows(stdout, "small")) == 2 and len(table_rows(stdout, "gpt2")) == 2


def test_train_throughput_bench_prints_both_attention_paths(tmp_path: Path):
    out = tmp_path / "throughput.json"
    stdout = run_bench(
        "train_throughput.py", "--models", "tiny", "--steps", "2", "--min-time", "0", "--warmup", "1",
        "--threads", "1", "--json", str(out),
    )  # fmt: skip
    (row,) = table_rows(stdout, "tiny")
    fast, explicit = (float(cell.replace(",", "")) for cell in row[3:5])
    assert fast > 0 and explicit > 0
    assert [r["model"] for r in json.loads(out.read_text())["rows"]] == ["tiny"]


def test_generation_bench_checks_the_cache_gives_the_same_tokens():
    stdout = run_bench(
        "generation.py", "--presets", "tiny", "--new-tokens", "40", "--repeats", "1", "--threads", "1"
    )
    rows = table_rows(stdout, "tiny")
    assert len(rows) == 2, stdout
    assert all(row[-1] == "yes" for row in rows), "the KV cache changed the greedy tokens"


def test_memory_bench_samples_memory_during_training():
    stdout = run_bench("memory.py", "--steps", "40", "--every", "20", "--threads", "1")
    assert [
        row[0] for row in table_rows(stdout, "1") + table_rows(stdout, "20") + table_rows(stdout, "40")
    ] == [
        "1",
        "20",
        "40",
    ]
    assert "kept 40 records" in stdout


def test_entropy_gap_bench_reports_the_gap_to_the_floor():
    stdout = run_bench("entropy_gap.py", "--max-iters", "5", "--val-chars", "2000", "--threads", "1")
    report = dict(line.split(None, 1) for line in stdout.splitlines() if line.startswith(("gap", "floor")))
    assert report["gap"].startswith("+") and "% of the floor" in report["gap"]


@pytest.mark.browser
def test_page_weight_bench_times_a_page_of_the_built_book(built_html: Path):
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing: install Debian's `chromium` to run the browser checks")
    stdout = run_bench(
        "page_weight.py", "--html", str(built_html), "--runs", "1", "--pages", "book/viewtest.html"
    )
    (row,) = table_rows(stdout, "book/viewtest.html")
    figures, text, in_view, first, every = row[3:8]
    assert int(figures) > 0
    assert all(cell.endswith(" s") for cell in (text, in_view, first, every)), row
    assert row[-1] == "0", "a request left the machine"

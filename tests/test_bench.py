"""Every script in ``bench/`` still runs against the current library, at its smallest settings.

The benchmarks' numbers are not tested (timing belongs in ``bench/``, not in asserts); what is tested is
that each script runs to the end, prints its table with the rows asked for, writes valid JSON where it
writes any, and reports the correctness checks it makes (the KV cache and the cache-free path give the
same tokens). A script that rots when the library changes would otherwise only be found by the next
person to run it, which for ``bench/gpu.py`` is a session with a GPU and 15 minutes to spend.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
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
        assert 0 <= row["tokens_agreeing"] <= row["new_tokens"]
        assert row["cache_tokens_per_s"] > 0 and row["no_cache_tokens_per_s"] > 0
    assert len(table_rows(stdout, "small")) == 2 and len(table_rows(stdout, "gpt2")) == 2
    assert set(results["sdpa_backend"]) == {"small", "gpt2"}
    assert not any(v.startswith("unknown") for v in results["sdpa_backend"].values()), results["sdpa_backend"]


def load_gpu_bench():
    """bench/gpu.py as a module, to call its pieces in this process."""
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reduced_args() -> argparse.Namespace:
    """What ``bench/gpu.py --reduced --steps 1 --warmup 1 --gen-repeats 1`` resolves its flags to."""
    return argparse.Namespace(
        reduced=True,
        steps=1,
        warmup=1,
        dtype="float32",
        gen_repeats=1,
        presets=["small", "gpt2"],
        no_compile=False,
        tune=False,
    )


def test_gpu_bench_reads_the_attention_kernel_and_the_compile_counters():
    """Both read private torch API (``torch._fused_sdp_choice``, dynamo's counters) and fall back quietly
    when it changes: this test is what notices such a change before the one GPU run does."""
    from torch.nn.attention import SDPBackend

    gpu = load_gpu_bench()
    backends = gpu.sdpa_backends(reduced_args(), torch.device("cpu"), torch.bfloat16)
    assert set(backends) == {"small", "gpt2"} and set(backends.values()) <= set(SDPBackend.__members__), (
        backends
    )
    # gpt2 trains without dropout: causal, no mask, head dim 32 here, which the fused kernel takes.
    assert backends["gpt2"] == "FLASH_ATTENTION"
    counts = gpu.dynamo_counts()
    assert counts is not None and all(isinstance(n, int) and n >= 0 for n in counts)


def test_gpu_bench_halves_a_batch_that_runs_out_of_memory(monkeypatch, one_thread):
    gpu = load_gpu_bench()
    real, tried = gpu.measure_training, []

    def out_of_memory_above_one(config, batch_size, *args, **kwargs):
        tried.append(batch_size)
        if batch_size > 1:
            raise torch.OutOfMemoryError(f"CUDA out of memory (batch {batch_size})")
        return real(config, batch_size, *args, **kwargs)

    monkeypatch.setattr(gpu, "measure_training", out_of_memory_above_one)
    device = torch.device("cpu")
    peaks = {"spec": None, "measured": 1e9}
    row = gpu.train_item("small", False, reduced_args(), device, peaks)
    assert tried == [2, 1] and row["batch_size"] == 1 and row["oom_halved_from"] == [2]
    assert row["tokens_per_s"] > 0


def test_gpu_bench_runs_the_compiled_gpt2_right_after_the_quick_items():
    gpu = load_gpu_bench()
    args = reduced_args()
    names = [name for name, _, _ in gpu.build_plan(args, torch.device("cpu"), torch.float32, {})]
    assert names == [
        "train small compile off",
        "train gpt2 compile off",
        "train gpt2 compile on",
        "decode gpt2 compiled",
        "generate small",
        "generate gpt2",
        "train small compile on",
        "decode small compiled",
    ]
    args.no_compile = True  # nothing compiled: neither training nor decoding
    assert [n for n, _, _ in gpu.build_plan(args, torch.device("cpu"), torch.float32, {})] == names[
        :2
    ] + names[4:6]


def test_gpu_bench_tune_runs_its_gpt2_variants_after_the_compiled_gpt2(one_thread, capsys):
    """``--tune`` in the reduced mode: each variant trains for real (the mode reaches the trainer, the batch
    is doubled) and gets a row that names it. Only the tune items run here: each compiles, which on a
    CPU takes tens of seconds."""
    gpu = load_gpu_bench()
    args = reduced_args()
    args.tune = True
    plan = gpu.build_plan(args, torch.device("cpu"), torch.float32, {"spec": None, "measured": 1e9})
    names = [name for name, _, _ in plan]
    tune = ["train gpt2 compile on, batch x2", "train gpt2 compile on, max-autotune-no-cudagraphs"]
    at = names.index("train gpt2 compile on")
    assert names[at + 1 : at + 5] == [tune[0], "decode gpt2 compiled", tune[1], "generate small"]
    rows = [run() for name, run, _ in plan if name in tune]
    assert [(r["variant"], r["compile_mode"], r["batch_size"]) for r in rows] == [
        ("batch x2", None, 2 * 2),
        ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs", 2),
    ]
    for row in rows:
        assert row["compiled"] is True and row["compile_fallback"] is None, row["warnings"]
        assert row["tokens_per_s"] > 0
    gpu.print_tables({"items": rows, "skipped": [], "failed": []})
    table = table_rows(capsys.readouterr().out, "gpt2")
    assert [(row[2], row[4]) for row in table] == [
        ("4x64", "batch x2"),
        ("2x64", "max-autotune-no-cudagraphs"),
    ]


def test_gpu_bench_tune_fits_the_default_budget_on_a_gpu():
    """On a GPU every item carries its expected seconds (a missing estimate would end the one GPU run with
    a KeyError), and the tune variants are expected to end within the default budget."""
    gpu = load_gpu_bench()
    args = reduced_args()
    args.reduced, args.tune = False, True
    plan = gpu.build_plan(args, torch.device("cpu"), torch.float32, {})
    assert all(seconds > 0 for _, _, seconds in plan)
    last_tune = max(i for i, (name, _, _) in enumerate(plan) if "max-autotune" in name)
    assert sum(seconds for _, _, seconds in plan[: last_tune + 1]) <= gpu.TUNE_BUDGET_S


def test_gpu_bench_times_compiled_decoding_against_the_plain_cache(one_thread, capsys):
    """The decode item in the reduced mode, in float32: compiled decoding gives every plain-cache token."""
    gpu = load_gpu_bench()
    row = gpu.compiled_decoding_item("small", reduced_args(), torch.device("cpu"), torch.float32)
    assert row["item"] == "decode" and row["new_tokens"] == gpu.REDUCED["block_size"] - 1
    assert row["tokens_agreeing"] == row["new_tokens"]
    assert row["compiled_tokens_per_s"] > 0 and row["cache_tokens_per_s"] > 0 and row["first_call_s"] > 0
    assert row["speedup"] == pytest.approx(row["compiled_tokens_per_s"] / row["cache_tokens_per_s"])
    gpu.print_tables({"items": [row], "skipped": [], "failed": [], "dtype": "float32"})
    (printed,) = table_rows(capsys.readouterr().out, "small")
    assert printed[5] == f"{row['new_tokens']} of {row['new_tokens']}"


def test_gpu_bench_skips_an_item_expected_to_end_after_the_budget(monkeypatch, one_thread, tmp_path, capsys):
    gpu = load_gpu_bench()

    def plan(args, device, dtype, peaks):
        assert args.tune  # the flag reaches the plan
        fake = lambda name: lambda: {"item": "fake", "name": name}  # noqa: E731
        return [
            ("quick", fake("quick"), 0.0),
            ("too long", fake("too long"), 1e9),
            ("after", fake("after"), 0.0),
        ]

    monkeypatch.setattr(gpu, "build_plan", plan)
    out = tmp_path / "gpu.json"
    assert gpu.main(["--reduced", "--tune", "--budget-s", "600", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["name"] for r in results["items"]] == ["quick", "after"] and results["skipped"] == ["too long"]
    assert "skipped (time budget): too long" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--tune", "--no-compile"], ["--tune", "--presets", "small"]])
def test_gpu_bench_refuses_tune_without_the_compiled_gpt2(flags, capsys):
    with pytest.raises(SystemExit) as info:
        load_gpu_bench().main(flags)
    assert info.value.code == 2 and "--tune" in capsys.readouterr().err


def test_gpu_bench_runs_from_a_checkout_where_arlm_lib_is_not_installed(tmp_path: Path):
    """A GPU machine lent for one run may have torch and a copy of the repository, nothing installed:
    the script finds the checkout's arlm_lib itself. ``-S`` skips the site hooks, and with them this
    environment's editable install; PYTHONPATH keeps torch and the other site-packages importable."""
    import sysconfig

    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "CUDA_VISIBLE_DEVICES": ""}
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import arlm_lib"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0, "arlm_lib is importable without the checkout: the test proves nothing"
    result = subprocess.run(
        [sys.executable, "-S", str(BENCH / "gpu.py"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--budget-s" in result.stdout


def test_training_throughput_is_timed_without_the_trainers_final_evaluation(monkeypatch, one_thread):
    """The trainer evaluates at max_iters on a whole batch in eager mode; on a GPU that evaluation would
    count in the peak memory of a compiled run (gpt2's float32 logits at batch 64: tens of GiB)."""
    from arlm_lib.train import Trainer

    gpu = load_gpu_bench()
    evaluated = []
    real_evaluate = Trainer.evaluate

    def spy(self, *args, **kwargs):
        evaluated.append(self.step)
        return real_evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    result = gpu.measure_training(gpu.bench_config("small", reduced=True), 2, 2, 1, "cpu", "float32")
    assert result["tokens_per_s"] > 0
    assert evaluated == [], f"evaluated at steps {evaluated}"
    assert result["timed_steps"] == 2


def test_gpu_bench_keeps_its_results_and_prints_them_when_terminated(tmp_path: Path):
    """A session that runs out of time ends the run with SIGTERM: the JSON keeps every finished item and
    names the one cut short, and the table is still printed."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    args = ["--reduced", "--no-compile", "--steps", "1", "--warmup", "1", "--gen-repeats", "50"]
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "gpu.py"), *args, "--json", str(out)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "generate small ...":
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    results = json.loads(out.read_text())
    assert [r["item"] for r in results["items"]] == ["train", "train"]
    assert results["interrupted"] == "generate small"
    assert "INTERRUPTED during: generate small" in rest and len(table_rows(rest, "gpt2")) == 1


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


@pytest.mark.slow
def test_generation_bench_times_compiled_decoding_and_checks_its_tokens():
    stdout = run_bench(
        "generation.py", "--presets", "tiny", "--new-tokens", "140", "--repeats", "1", "--threads", "1",
        "--compile",
    )  # fmt: skip
    assert "compiled cache (tok/s)" in stdout
    rows = table_rows(stdout, "tiny")
    assert len(rows) == 2, stdout
    assert all(float(row[7]) > 0 for row in rows)  # the compiled column
    assert all(row[-1] == "yes" for row in rows), "compiled decoding changed the greedy tokens"


def test_speculative_bench_checks_greedy_tokens_and_counts_passes():
    stdout = run_bench(
        "speculative.py", "--orders", "3", "--draft-tokens", "0", "3", "--new-tokens", "40", "--repeats", "1"
    )  # fmt: skip
    rows = table_rows(stdout, "3-gram")
    assert [(row[1], row[2]) for row in rows] == [
        ("0", "greedy"),
        ("0", "sampling"),
        ("3", "greedy"),
        ("3", "sampling"),
    ]
    # Greedy: the plain greedy tokens; sampling without drafts: even plain sampling's tokens (one stream).
    assert [row[-1] for row in rows] == ["yes", "yes", "yes", "-"]
    per_pass = [float(row[4]) for row in rows]
    assert per_pass[:2] == [1.0, 1.0]  # no draft: one pass per token
    assert all(1.0 < x <= 4.0 for x in per_pass[2:])  # k = 3: between 1 and k + 1 tokens per pass
    assert all(0.0 <= float(row[3]) <= 1.0 for row in rows[2:])


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

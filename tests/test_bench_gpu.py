"""bench/bench_gpu.py --device cpu --quick runs end to end: the table, the JSON keys, the CPU-vs-CPU check."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_gpu.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu") / "quick.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    return proc, out


def test_quick_cpu_run_prints_the_table_and_passes_the_check(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for heading in ("CPU vs device check (cpu vs cpu", "FVAE training faces/s", "prediction faces/s",
                    "one epoch over", "targets (issue 9)", "check: PASS"):
        assert heading in text, heading
    assert "skipped (--quick)" in text            # compiled rows are listed, not run


def test_quick_cpu_json_has_every_part(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {"environment", "sizes", "targets", "config", "check", "data", "train", "best", "predict",
            "epoch_16m", "summary"} <= res.keys()
    check = res["check"]
    assert check["passed"] is True
    for key in ("matched_amp_off", "same_weights", "fit_model_amp_off"):
        assert check[key]["rel_mse_diff"] == 0.0 and check[key]["max_abs_diff"] == 0.0   # CPU vs CPU: identical
    assert "skipped" in check["matched_amp_on"]
    ok = [r for r in res["train"] if r["status"] == "ok"]
    assert {r["batch_size"] for r in ok} == set(res["sizes"]["batch_sizes"])
    assert all(r["faces_per_s"] > 0 and r["step_ms"] > 0 for r in ok)
    assert any(r["compile"] and r["status"].startswith("skipped") for r in res["train"])
    assert {r["path"] for r in res["predict"]} == {"model.predict (device)", "Fitted.predict (host numpy)"}
    epoch = res["epoch_16m"]
    assert epoch["extrapolated_s"] > 0 and epoch["measured"]["status"] == "ok"
    assert epoch["measured"]["faces"] >= 0.95 * res["sizes"]["epoch_faces"]
    summary = res["summary"]
    assert set(summary) == {"train_faces_per_s", "epoch_16m_s", "predict_faces_per_s", "check"}
    assert summary["train_faces_per_s"]["target"] == 5e6 and summary["predict_faces_per_s"]["target"] == 50e6
    assert summary["epoch_16m_s"]["met"] is None          # a 40k-face epoch says nothing about the 16M target


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_a_gpu_names_the_fix():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "no CUDA device: run with --device cpu --quick to check the script" in proc.stderr

"""The benchmark CLI prints one JSON line with the fields the README promises."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_prints_one_json_line():
  result = subprocess.run(
      [sys.executable, "-m", "ssl_jax.bench", "simclr_fashion_mnist", "--batch", "16",
       "--steps", "2", "--warmup", "1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  report = json.loads(lines[0])
  assert report["bench"] == "simclr_fashion_mnist" and report["impl"] == "ssl_jax"
  assert report["batch"] == 16
  for field in ("step_s_median", "items_per_s", "compile_s", "flops_per_step",
                "matmul_peak_gflops", "mfu"):
    assert report[field] > 0, field
  assert report["step_s_min"] <= report["step_s_median"] <= report["step_s_max"]
  assert 0 < report["mfu"] < 1

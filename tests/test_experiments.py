"""Every experiment module runs end to end in smoke mode (pretraining, then its
evaluations) on the tiny real Fashion-MNIST subset, so none of them rots."""
import json
import os
import pkgutil
import subprocess
import sys

import pytest

import experiments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_EXPERIMENTS = {"common", "datasets"}  # shared helpers of the experiment modules
MODULES = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                 if m.name not in NOT_EXPERIMENTS)


@pytest.mark.parametrize("name", MODULES)
def test_experiment_runs_in_smoke_mode(name, tiny_data_dir, tmp_path):
  workdir = tmp_path / name
  result = subprocess.run(
      [sys.executable, "-m", f"experiments.{name}", "--smoke", "--workdir", str(workdir),
       f"--config.data.data_dir={tiny_data_dir}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  config = json.load(open(workdir / "config.json"))
  for mode in config["eval"]["modes"].split(","):
    report = json.load(open(workdir / "eval" / f"{mode}.json"))
    assert 0 <= report["top1"] <= 1 and report["checkpoint_step"] == config["total_steps"]

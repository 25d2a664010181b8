"""Every experiment module runs end to end in smoke mode (pretraining, then its
evaluations) on the tiny real Fashion-MNIST subset, so none of them rots."""
import json
import os
import pkgutil
import re
import subprocess
import sys

import numpy as np
import pytest

import experiments

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOT_EXPERIMENTS = {"common", "recipes", "table", "scale"}  # helpers, the table and page drivers
MODULES = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                 if m.name not in NOT_EXPERIMENTS)


def _run(command, **kwargs):
  return subprocess.run([sys.executable, *command], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                        timeout=600, **kwargs)


# The network each teacher-student method's official code evaluates (reported first, as
# "pretrained") and the other one (reported second, as "pretrained/NAME"): DINO's
# eval_linear.py / eval_knn.py `--checkpoint_key teacher`; SimDINO's code follows DINO's;
# BYOL and MoCo v3 evaluate the online network / base encoder. CLIP: the image tower's
# backbone features, then its joint embedding.
TWO_NETWORKS = {"dino": ("teacher", "student"), "simdino": ("teacher", "student"),
                "byol": ("online", "target"), "moco": ("online", "target"),
                "clip": ("backbone", "joint")}


@pytest.mark.parametrize("name", MODULES)
def test_experiment_runs_in_smoke_mode(name, smoke_run):
  workdir, result = smoke_run(name)
  assert result.returncode == 0, result.stderr[-4000:]
  assert re.fullmatch(r"wall time \d+ min \d\d s \(pretraining \d+ min \d\d s, evaluation "
                      r"\d+ min \d\d s\)", result.stderr.strip().splitlines()[-1]), result.stderr[-400:]
  config = json.load(open(workdir / "config.json"))
  for mode in config["eval"]["modes"].split(","):
    report = json.load(open(workdir / "eval" / f"{mode}.json"))
    assert report["checkpoint_step"] == config["total_steps"]
    if mode == "objective":  # the method's held-out loss, next to its random init's
      assert np.isfinite(report["loss"]) and np.isfinite(report["baselines"]["random_init"])
    else:
      assert 0 <= report["top1"] <= 1
      others = [k for k in report["details"] if k.startswith("pretrained/")]
      if mode not in ("linear", "knn"):
        continue
      if name in TWO_NETWORKS:
        first, second = TWO_NETWORKS[name]
        assert others == [f"pretrained/{second}"], report["details"].keys()
        assert f"-> {first!r}" in report["protocol"]["features"], report["protocol"]
      else:
        assert not others, report["details"].keys()


def test_results_table_skips_finished_rows_and_writes_readme(tiny_data_dir, smoke_run, tmp_path):
  """The table over the smoke runs above: finished rows are not rerun, the README section
  between the markers is replaced by rows read from each run's eval/*.json, and a figure
  is drawn per run plus the overview."""
  from experiments import table
  methods = [m for m in table.methods() if m in MODULES]
  for method in methods:
    assert smoke_run(method)[1].returncode == 0
  smoke_root = smoke_run(methods[0])[0].parent
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{table.START}\nold table\n{table.END}\noutro\n")
  figures = tmp_path / "figures"
  result = _run(["-m", "experiments.table", "--smoke", "--root", str(smoke_root),
                 "--readme", str(readme), "--figures", str(figures), "--noise_seeds", "1",
                 f"--data_dir={tiny_data_dir}"])
  assert result.returncode == 0, result.stderr[-4000:]
  for method in methods:
    assert f"{method}: already trained and evaluated" in result.stdout
  assert [m for m in methods if table.finetunes(m)] == ["mae"]
  assert "mae: fine-tuning and training from scratch" in result.stdout
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
  rows = [line for line in text.splitlines() if line.startswith("| ")]
  assert len(rows) == 2 + len(methods) + 1  # header, rule, methods, raw pixels
  for method, row in zip(methods, rows[2:]):
    report = json.load(open(smoke_root / method / "eval" / "linear.json"))
    knn = json.load(open(smoke_root / method / "eval" / "knn.json"))
    assert f"**{100 * report['top1']:.2f}%**" in row and f"{100 * knn['top1']:.2f}%" in row
    # Teacher-student rows: the network scored second, by name, in its own column.
    second = [k.split("/")[1] for k in report["details"] if k.startswith("pretrained/")]
    cells = row.split(" | ")
    if second:
      name = second[0]
      assert cells[5] == (f"{name}: {100 * report['details'][f'pretrained/{name}']['top1']:.2f}% / "
                          f"{100 * knn['details'][f'pretrained/{name}']['top1']:.2f}%"), row
    else:
      assert cells[5] == "–", row
    # MAE (TABLE_FINETUNE) is fine-tuned next to scratch; no other row is.
    if table.finetunes(method):
      tuned = json.load(open(smoke_root / method / "eval" / "finetune.json"))
      assert cells[6].startswith(f"{100 * tuned['top1']:.2f}% / "
                                 f"{100 * tuned['baselines']['random_init']:.2f}% (train[:256], "), row
    else:
      assert cells[6] == "–", row
    assert f"python3 -m experiments.{method} --workdir {smoke_root / method}" in row
  assert any(" | target: " in row for row in rows) and any(" | student: " in row for row in rows)
  assert f"{100 * report['baselines']['raw_input']:.2f}%" in rows[-1]
  for name in [*methods, "overview"]:
    assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "figures/overview.png" in text
  out = tmp_path / "one.png"
  plotted = _run(["-m", "ssl_jax.tools.plot", "--workdir", str(smoke_root / methods[0]), "--out", str(out)])
  assert plotted.returncode == 0 and out.exists(), plotted.stderr[-2000:]
  missing = _run(["-m", "ssl_jax.tools.plot", "--workdir", str(tmp_path / "nothing")])
  assert missing.returncode == 1 and "metrics.jsonl does not exist" in missing.stderr


def test_the_noise_line_is_the_mean_and_spread_over_seeds():
  from experiments import table
  noise = table.noise_summary("vicreg", [{"linear": 0.86, "knn": 0.84},
                                         {"linear": 0.87, "knn": 0.83},
                                         {"linear": 0.85, "knn": 0.835}])
  assert noise["seeds"] == 3
  assert abs(noise["linear"]["mean"] - 0.86) < 1e-12 and abs(noise["linear"]["spread"] - 0.02) < 1e-12
  assert abs(noise["knn"]["mean"] - 0.835) < 1e-12 and abs(noise["knn"]["spread"] - 0.01) < 1e-12
  line = table.noise_line(noise)
  assert "vicreg at 3 seeds" in line and "linear 86.00% (spread 2.00)" in line
  assert "knn 83.50% (spread 1.00)" in line
  rows = [{"method": "vicreg", "views": "1x24", "steps": 1, "linear": 0.86, "knn": 0.84,
           "knn_k": 20, "random_linear": 0.7, "random_knn": 0.7, "raw_linear": 0.8,
           "raw_knn": 0.8, "images_per_s": None, "pretrain_minutes": None,
           "eval_minutes": None, "command": "c", "second": None}]
  assert table.markdown(rows, noise).endswith(line)
  assert "Noise" not in table.markdown(rows)


def test_the_views_column_leaves_out_switched_off_view_groups():
  from experiments import table
  groups = {"global": {"count": 2, "crop_size": 24}, "local": {"count": 4, "crop_size": 12}}
  assert table.views_label(groups) == "2x24, 4x12"
  groups["local"]["count"] = 0  # DINO without local crops: two views, not "2x24, 0x12"
  assert table.views_label(groups) == "2x24"


def test_results_table_discovers_its_rows(tmp_path, monkeypatch):
  """The rows are every experiment whose default config trains on Fashion-MNIST and is
  scored by linear and kNN, alphabetical; a new such module is a row with no edit to
  experiments/table.py, and --methods is checked against the discovered rows."""
  from experiments import table
  rows = table.methods()
  assert list(rows) == sorted(rows) and set(rows) <= set(MODULES)
  assert {"simclr", "byol", "vicreg", "mae", "denoising", "rotation"} <= set(rows)
  assert not {"clip", "mlm", "clm", "colorization"} & set(rows)  # other default datasets
  # A new experiment module (here SimCLR's config under another name) and a helper
  # module with no get_config, in a second directory of the experiments package.
  (tmp_path / "zz_new_method.py").write_text(
      "from experiments.simclr import get_config\n")
  (tmp_path / "zz_helper.py").write_text("X = 1\n")
  monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(tmp_path)])
  table.methods.cache_clear()
  try:
    assert table.methods() == (*rows, "zz_new_method")
  finally:
    table.methods.cache_clear()
    for name in ("experiments.zz_new_method", "experiments.zz_helper"):
      sys.modules.pop(name, None)
  bad = _run(["-m", "experiments.table", "--methods", "simclr,clip", "--readme="])
  assert bad.returncode == 2 and "clip is not a row" in bad.stderr


def test_a_fine_tune_counts_for_the_table_only_with_its_protocol(tmp_path):
  """A finetune report from another split or epoch count (a full-label fine-tune) is
  redone by the table; one at FINETUNE_SPLIT and FINETUNE_EPOCHS of the final step is kept."""
  import ml_collections
  from experiments import table
  from ssl_jax.core import rundir
  workdir = str(tmp_path)
  rundir.save_config(ml_collections.ConfigDict({"total_steps": 7}), workdir)

  def report(step, split, epochs):
    rundir.write_eval(workdir, "finetune", {"top1": 0.5, "checkpoint_step": step, "protocol": {
        "train_split": split, "epochs": epochs}})

  assert not table.is_finetuned(workdir)
  report(7, "train", table.FINETUNE_EPOCHS)
  assert not table.is_finetuned(workdir)
  report(7, table.FINETUNE_SPLIT, table.FINETUNE_EPOCHS + 1)
  assert not table.is_finetuned(workdir)
  report(6, table.FINETUNE_SPLIT, table.FINETUNE_EPOCHS)
  assert not table.is_finetuned(workdir)
  report(7, table.FINETUNE_SPLIT, table.FINETUNE_EPOCHS)
  assert table.is_finetuned(workdir)
  assert table.finetune_command(workdir)[-4:] == [
      "--eval", "finetune.epochs=5", "--eval", "train_split=train[:10%]"]

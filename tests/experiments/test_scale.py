"""experiments/scale.py, the docs/scale.md generator: every row is a config that builds and
passes the check pass on its slice's chip count, and the page is written from cached
reports (compiling is the page's command's work, run by hand)."""
import importlib
import json
import pathlib
import subprocess

import pytest

from experiments import scale
from ssl_jax import train
from ssl_jax.core import validate
from ssl_jax.tools import tpu


@pytest.mark.parametrize("row", scale.ROWS, ids=lambda r: r.name)
def test_every_row_is_a_config_its_slice_can_check(row):
  module_file, arg = row.config.split(":")
  module = importlib.import_module(f"experiments.{module_file[:-3]}")
  config = module.get_config(arg)
  validate.apply_overrides(config, [o[len("--config."):] for o in row.overrides])
  _, _, chips = tpu.parse(row.topology)
  train.check(config, device_count=chips)


def test_the_page_is_written_between_its_markers_from_cached_reports(tmp_path):
  row = scale.ROWS[0]
  cache = tmp_path / "cache"
  cache.mkdir()
  figures = {"state_bytes": 2**30, "total_bytes": 3 * 2**30, "hbm_bytes": 16 * 2**30,
             "fits": True, "roofline_s": 0.25, "bound": "memory", "mfu_bound": 0.4,
             "roofline_epoch_s": 1250.0, "roofline_run_s": 10 * 3600.0, "compile_s": 100.0,
             "flops_per_chip": 3e12, "model_flops": 32e12}
  report = {"topology": row.topology, "chips": 16, "chip": "TPU v5e", "global_batch": 1024,
            "precision": "float32", "fsdp": 1, "remat": "none",
            "train": figures, "eval": {"total_bytes": 2**29, "compile_s": 20.0}}
  pathlib.Path(scale.cache_path(row, str(cache))).write_text(json.dumps({"report": report}))
  page = tmp_path / "scale.md"
  page.write_text(f"intro\n{scale.START}\nold\n{scale.END}\nafter\n")
  scale.main(["--page_only", "--cache", str(cache), "--page", str(page)])
  text = page.read_text()
  assert text.startswith("intro\n") and text.endswith("after\n") and "old" not in text
  line = next(l for l in text.splitlines() if l.startswith(f"| {row.name} |"))
  assert "1.0 / 3.0 (16.0)" in line and "| yes | 1.50 |" in line and "250 ms" in line
  assert "memory, 40%" in line and "20.8 min" in line and "10.0 h" in line and "120 s" in line
  assert sum("not compiled yet" in l for l in text.splitlines()) == len(scale.ROWS) - 1


def test_compiling_some_rows_keeps_every_cached_row_on_the_page(tmp_path, monkeypatch):
  first, second, third = scale.ROWS[:3]
  cache = tmp_path / "cache"
  cache.mkdir()
  def keep(row, text):
    pathlib.Path(scale.cache_path(row, str(cache))).write_text(json.dumps({"error": text}))
  keep(first, "kept from an earlier run")
  compiled = []
  def compile_row(row, _):  # as run_row does: the record goes to the cache
    compiled.append(row.name)
    keep(row, "compiled now")
    keep(third, "compiled meanwhile by another run")
  monkeypatch.setattr(scale, "run_row", compile_row)
  page = tmp_path / "scale.md"
  page.write_text(f"{scale.START}\n{scale.END}\n")
  scale.main(["--rows", second.name, "--cache", str(cache), "--page", str(page)])
  assert compiled == [second.name]
  lines = page.read_text().splitlines()
  assert sum(l.startswith("| ") and "|---" not in l for l in lines) == len(scale.ROWS) + 1
  line = lambda row: next(l for l in lines if l.startswith(f"| {row.name} |"))
  assert "kept from an earlier run" in line(first)
  assert "compiled now" in line(second)
  assert "compiled meanwhile by another run" in line(third)


@pytest.mark.parametrize("returncode, stderr, words", [
    (-9, "compiling the train step: ...", "killed by signal 9 after"),
    (1, "compiling the train step: ...\nerror: topology 'v9:1x1' is unknown\n",
     "error: topology 'v9:1x1' is unknown"),
    (1, "", "exit status 1"),
])
def test_a_failed_row_keeps_why(tmp_path, monkeypatch, returncode, stderr, words):
  """A compiler the host killed (the OOM killer's SIGKILL) is recorded as killed, not as
  the last line it printed; an aot error keeps its message."""
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
      a[0], returncode, stdout="", stderr=stderr))
  record = scale.run_row(scale.ROWS[0], str(tmp_path))
  assert words in record["error"]
  assert json.loads(next(tmp_path.iterdir()).read_text())["error"] == record["error"]


def test_a_compile_stopped_from_outside_is_not_recorded(tmp_path, monkeypatch):
  """SIGTERM or SIGINT to the compiler says nothing about the row: no report is kept (so
  the page's command compiles it again), and the driver stops saying so."""
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
      a[0], -15, stdout="", stderr="compiling the train step: ..."))
  with pytest.raises(SystemExit, match="stopped by signal 15 .* nothing recorded"):
    scale.run_row(scale.ROWS[0], str(tmp_path))
  assert not list(tmp_path.iterdir())

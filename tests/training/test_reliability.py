"""Runs that fail loudly and checkpoints that can be trusted: each fault injected for real.

A damaged checkpoint step falls back to the previous good one (moved aside, warned about)
and the resumed run still ends bitwise equal to an uninterrupted one; a config mismatch
names its fields; divergence stops the run with nothing non-finite on disk; a failed
background save is raised; SIGTERM to an experiment exits 0 without evaluating.
All in this process (1 CPU device) on the tiny real Fashion-MNIST subset.

The same journeys with the workdir in a bucket (gs://) run against a real GCS JSON API on
127.0.0.1 (tests/helpers/gcs_emulator.py).
"""
import glob
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from ssl_jax import evals, evaluate, train
from ssl_jax.core import errors, parallel
from ssl_jax.training import checkpoint, engine
from train_worker import flatten, tiny_config
import gcs_emulator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, STOP_AT = 8, 6  # checkpoints every 2 steps: the stopped run holds steps 2, 4, 6


def config_for(data_dir, **fields):
  config = tiny_config(data_dir, STEPS)
  config.keep_checkpoints = 3
  config.async_checkpointing = False
  for name, value in fields.items():
    section = config
    *parents, leaf = name.split(".")
    for parent in parents:
      section = section[parent]
    section[leaf] = value
  return config


def host_values(state) -> dict:
  return flatten(parallel.to_host((state.params, state.method_state, state.opt_state)))


@pytest.fixture(scope="module")
def uninterrupted(tiny_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  return host_values(train.train(config_for(tiny_data_dir), str(workdir)))


@pytest.fixture(scope="module")
def stopped(tiny_data_dir, tmp_path_factory):
  """A workdir stopped at STOP_AT with checkpoints 2, 4, 6: copied, then damaged, per test."""
  workdir = tmp_path_factory.mktemp("stopped") / "run"
  train.train(config_for(tiny_data_dir), str(workdir), stop_at_step=STOP_AT)
  return workdir


@pytest.fixture(scope="module")
def bucket():
  with gcs_emulator.running() as url:
    yield url


def copy_of(stopped, tmp_path):
  target = tmp_path / "run"
  shutil.copytree(stopped, target)
  return target


def _step_dir(workdir, step):
  return workdir / "checkpoints" / str(step)


def _array_files(workdir, step):
  files = [f for f in glob.glob(str(_step_dir(workdir, step) / "state" / "**" / "d" / "*"),
                                recursive=True) if os.path.isfile(f)]
  assert files, list((_step_dir(workdir, step) / "state").rglob("*"))
  return sorted(files, key=os.path.getsize)


def _garbage(path, start=0, length=None):
  size = os.path.getsize(path)
  length = size - start if length is None else length
  with open(path, "r+b") as f:
    f.seek(start)
    f.write(np.random.default_rng(0).integers(0, 256, length, dtype=np.uint8).tobytes())


def delete_array_file(workdir, step):
  os.remove(_array_files(workdir, step)[-1])


def truncate_array_file(workdir, step):
  path = _array_files(workdir, step)[-1]
  os.truncate(path, os.path.getsize(path) // 2)


def garbage_inside_array_file(workdir, step):
  path = _array_files(workdir, step)[-1]
  size = os.path.getsize(path)
  _garbage(path, start=size // 3, length=size // 3)


def overwrite_all_array_files(workdir, step):
  for path in _array_files(workdir, step):
    _garbage(path)


def overwrite_metadata(workdir, step):
  _garbage(_step_dir(workdir, step) / "state" / "_METADATA")


def overwrite_manifest(workdir, step):
  _garbage(_step_dir(workdir, step) / "state" / "manifest.ocdbt")


def delete_integrity_record(workdir, step):
  os.remove(_step_dir(workdir, step) / "integrity" / "metadata")


def overwrite_iterator_state(workdir, step):
  (path,) = glob.glob(str(_step_dir(workdir, step) / "data" / "process_0-of-*.json"))
  with open(path, "w") as f:
    f.write('{"next_index": 3')


DAMAGES = [delete_array_file, truncate_array_file, garbage_inside_array_file,
           overwrite_all_array_files, overwrite_metadata, overwrite_manifest,
           delete_integrity_record, overwrite_iterator_state]


def assert_bitwise(state, reference):
  got = host_values(state)
  assert set(got) == set(reference)
  for name, value in reference.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damaged_latest_step_falls_back_and_resumes_bitwise(
    damage, tiny_data_dir, stopped, uninterrupted, tmp_path, capsys):
  workdir = copy_of(stopped, tmp_path)
  damage(workdir, STOP_AT)
  state = train.train(config_for(tiny_data_dir), str(workdir))
  log = capsys.readouterr().err
  assert f"checkpoint step {STOP_AT} is damaged" in log and "at step 4" in log, log
  assert (workdir / "checkpoints" / f"corrupt-{STOP_AT}").is_dir()  # kept, not deleted
  assert int(state.step) == STEPS
  assert_bitwise(state, uninterrupted)
  # The fallback re-ran steps 5 and 6; the metrics file holds every step once.
  import json
  steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl") if "loss" in line]
  assert steps == list(range(1, STEPS + 1))


def test_newest_step_lost_and_next_damaged_falls_back_two(tiny_data_dir, stopped, uninterrupted,
                                                          tmp_path, capsys):
  workdir = copy_of(stopped, tmp_path)
  shutil.rmtree(_step_dir(workdir, 6))  # a crash before the newest step was written
  garbage_inside_array_file(workdir, 4)
  state = train.train(config_for(tiny_data_dir), str(workdir))
  log = capsys.readouterr().err
  assert "checkpoint step 4 is damaged" in log and "resumed from" in log and "at step 2" in log
  assert_bitwise(state, uninterrupted)


def test_every_step_damaged_is_a_clear_error(tiny_data_dir, stopped, tmp_path):
  workdir = copy_of(stopped, tmp_path)
  for step in (2, 4, 6):
    garbage_inside_array_file(workdir, step)
  with pytest.raises(errors.NoGoodCheckpointError) as error:
    train.train(config_for(tiny_data_dir), str(workdir))
  message = str(error.value)
  for step in (6, 4, 2):
    assert f"step {step}:" in message and f"corrupt-{step}" in message
  assert "new --workdir" in message


def test_config_mismatch_names_each_field(tiny_data_dir, stopped, tmp_path):
  workdir = copy_of(stopped, tmp_path)
  config = config_for(tiny_data_dir, **{"model.width_multiplier": 0.125,
                                        "simclr.projection_dim": 8})
  with pytest.raises(errors.ConfigMismatchError) as error:
    train.train(config, str(workdir))
  message = str(error.value)
  assert "model.width_multiplier: 0.0625 in the run, 0.125 now" in message
  assert "simclr.projection_dim: 16 in the run, 8 now" in message
  assert "new --workdir" in message and "partial_restore" not in message
  assert not list((workdir / "checkpoints").glob("corrupt-*"))  # nothing was treated as damage


def test_safe_and_declared_changes_resume(tiny_data_dir, stopped, tmp_path, capsys):
  workdir = copy_of(stopped, tmp_path)
  config = config_for(tiny_data_dir, log_every_steps=2, total_steps=STEPS + 2,
                      resume_changes="total_steps")
  state = train.train(config, str(workdir))
  assert int(state.step) == STEPS + 2
  log = capsys.readouterr().err
  assert "log_every_steps changed: 1 -> 2" in log and "total_steps changed: 8 -> 10" in log


def test_declared_shape_change_is_a_mismatch_not_damage(tiny_data_dir, stopped, tmp_path):
  workdir = copy_of(stopped, tmp_path)
  config = config_for(tiny_data_dir, **{"simclr.projection_dim": 8,
                                        "resume_changes": "simclr.projection_dim"})
  with pytest.raises(errors.StateMismatchError, match=r"projection|Dense|kernel"):
    train.train(config, str(workdir))
  assert not list((workdir / "checkpoints").glob("corrupt-*"))


def _restorable_values(workdir, config):
  """Every checkpoint left in workdir, restored and verified: {step: host values}."""
  mesh = parallel.make_mesh()
  _, init, _ = engine.build(config, mesh)
  manager = checkpoint.Checkpointer(str(workdir), keep=10, async_save=False)
  try:
    abstract = engine.abstract_state(init, jax.random.PRNGKey(config.seed))
    return {step: host_values(manager.restore(abstract, step=step)) for step in manager.all_steps()}
  finally:
    manager.close()


def test_divergence_stops_with_nothing_nonfinite_on_disk(tiny_data_dir, tmp_path):
  # LARS scales each update to 1e6 * 1e-3 = 1000x the weight's norm: float32 overflows
  # within a few steps. Saving every step and logging every 7th checks the save-time guard.
  config = config_for(tiny_data_dir, total_steps=30, log_every_steps=7, checkpoint_every_steps=1,
                      **{"optimizer.learning_rate": 1e6})
  workdir = tmp_path / "diverged"
  with pytest.raises(errors.TrainingDiverged) as error:
    train.train(config, str(workdir))
  message = str(error.value)
  assert "non-finite" in message and "Last good checkpoint" in message
  first_bad = int(message.split("state at step ")[1].split()[0])
  saved = _restorable_values(workdir, config)
  assert saved and max(saved) < first_bad, (sorted(saved), first_bad)
  for step, values in saved.items():
    for name, value in values.items():
      assert np.all(np.isfinite(value)), (step, name)


@pytest.mark.parametrize("field, value", [("optimizer.learning_rate", float("nan")),
                                          ("optimizer.learning_rate", 0.0),
                                          ("optimizer.momentum", 1.0),
                                          ("optimizer.b2", -0.1),
                                          ("optimizer.weight_decay", float("inf")),
                                          ("simclr.temperature", float("nan")),
                                          ("total_steps", 0)])
def test_numeric_nonsense_is_rejected_before_training(tiny_data_dir, tmp_path, field, value):
  config = config_for(tiny_data_dir, **{field: value})
  with pytest.raises(errors.ConfigError, match=field.replace(".", r"\.")):
    _, init, _ = engine.build(config, parallel.make_mesh())
    init(jax.random.PRNGKey(0))  # method fields are checked when its network is built
  assert not (tmp_path / "checkpoints").exists()


def test_failed_background_save_is_raised(tiny_data_dir, tmp_path, monkeypatch):
  from orbax.checkpoint._src.checkpointers import async_checkpointer

  def fail(*args, **kwargs):
    raise OSError("No space left on device (injected)")

  monkeypatch.setattr(async_checkpointer, "_background_wait_for_commit_futures", fail)
  config = config_for(tiny_data_dir, async_checkpointing=True, total_steps=6)
  with pytest.raises(errors.CheckpointError) as error:
    train.train(config, str(tmp_path / "run"))
  message = str(error.value)
  assert "saving step 2" in message and str(tmp_path / "run" / "checkpoints" / "2") in message
  assert "No space left on device (injected)" in message


def test_evaluate_refuses_nonfinite_features(tiny_data_dir, stopped, tmp_path):
  workdir = copy_of(stopped, tmp_path)
  config = evals.load_run_config(str(workdir))
  mesh = parallel.make_mesh()
  _, init, _ = engine.build(config, mesh)
  state = init(jax.random.PRNGKey(0))
  state = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
  manager = checkpoint.Checkpointer(str(workdir), keep=10, async_save=False)
  manager.save(100, state, force=True)
  manager.close()
  with pytest.raises(errors.NonFiniteFeaturesError, match="non-finite"):
    evaluate.run(str(workdir), ["knn"], step=100)
  assert not (workdir / "eval").exists()


@pytest.mark.parametrize("damage", [overwrite_all_array_files, overwrite_manifest,
                                    delete_integrity_record], ids=lambda f: f.__name__)
def test_evaluate_refuses_a_damaged_checkpoint(tiny_data_dir, stopped, tmp_path, damage):
  """Evaluation reads only params and method_state, and verifies those like a resume."""
  workdir = copy_of(stopped, tmp_path)
  damage(workdir, STOP_AT)
  with pytest.raises(errors.CheckpointError, match=f"step {STOP_AT} .* is damaged"):
    evaluate.run(str(workdir), ["knn"])
  assert not (workdir / "eval").exists()


def _experiment(workdir, data_dir):
  return [sys.executable, "-m", "experiments.simclr", "--workdir", str(workdir),
          f"--config.data.data_dir={data_dir}", "--config.global_batch_size=32",
          "--config.total_steps=40", "--config.log_every_steps=2",
          "--config.checkpoint_every_steps=100", "--config.eval.monitor_every_steps=0",
          "--config.model.depth=10", "--config.model.width_multiplier=0.0625",
          "--config.simclr.projection_hidden_dims=(32,)",
          "--config.simclr.projection_dim=16", "--config.optimizer.warmup_steps=1",
          "--config.eval.batch_size=64", "--config.eval.modes=knn"]


def test_sigterm_to_an_experiment_in_a_bucket_exits_without_evaluating_then_resumes(
    tiny_data_dir, bucket, tmp_path):
  """An experiment whose workdir is gs://...: SIGTERM saves and stops without evaluating;
  the rerun resumes from the bucket, evaluates and writes its scores there; nothing is
  written to a local folder."""
  from ssl_jax.core import paths
  workdir = f"{bucket}/sigterm"
  env = dict(os.environ, PYTHONPATH=ROOT)
  process = subprocess.Popen(_experiment(workdir, tiny_data_dir), cwd=tmp_path, env=env,
                             stderr=subprocess.PIPE, text=True)
  lines = []
  for line in process.stderr:  # signal as soon as the loop runs
    lines.append(line)
    if "first step" in line:
      process.send_signal(signal.SIGTERM)
      break
  lines += process.stderr.readlines()
  assert process.wait(timeout=300) == 0, "".join(lines)
  log = "".join(lines)
  assert "SIGTERM: saved step" in log and "no evaluation" in log, log
  assert not paths.exists(f"{workdir}/eval") and not paths.exists(f"{workdir}/lock.json")
  saved = [int(p) for p in paths.listdir(f"{workdir}/checkpoints") if p.isdigit()]
  assert saved and max(saved) < 40

  rerun = subprocess.run(_experiment(workdir, tiny_data_dir), cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr
  assert f"at step {max(saved)}" in rerun.stderr
  assert "top1" in paths.read_text(f"{workdir}/eval/knn.json")
  assert os.listdir(tmp_path) == []  # no local folder named 'gs:'


def test_a_bucket_workdir_falls_back_past_a_damaged_step_and_resumes_bitwise(
    tiny_data_dir, bucket, uninterrupted, tmp_path, capsys, monkeypatch):
  """Train in a bucket, stop, damage the newest step there, resume: the step is moved aside
  in the bucket and the run ends bitwise equal to an uninterrupted local run; then plot and
  export read and write the bucket."""
  import json
  from ssl_jax import export
  from ssl_jax.core import paths
  from ssl_jax.tools import plot
  monkeypatch.chdir(tmp_path)
  workdir = f"{bucket}/fallback"
  train.train(config_for(tiny_data_dir), workdir, stop_at_step=STOP_AT)
  assert sorted(int(p) for p in paths.listdir(f"{workdir}/checkpoints")) == [2, 4, 6]
  paths.write_text(f"{workdir}/checkpoints/{STOP_AT}/integrity/metadata", '{"format": 1, "lea')
  capsys.readouterr()
  state = train.train(config_for(tiny_data_dir), workdir)
  log = capsys.readouterr().err
  assert f"checkpoint step {STOP_AT} is damaged" in log and "at step 4" in log, log
  assert paths.isdir(f"{workdir}/checkpoints/corrupt-{STOP_AT}")
  assert int(state.step) == STEPS
  assert_bitwise(state, uninterrupted)
  steps = [json.loads(line)["step"] for line in paths.read_text(f"{workdir}/metrics.jsonl")
           .splitlines() if "loss" in line]
  assert steps == list(range(1, STEPS + 1))
  assert any(n.startswith("events.out.tfevents") for n in paths.listdir(f"{workdir}/tensorboard"))

  assert plot.plot_run(workdir) == f"{workdir}/curves.png"
  assert paths.read_bytes(f"{workdir}/curves.png")[:8] == b"\x89PNG\r\n\x1a\n"
  out = f"{workdir}/export/backbone.safetensors"
  sidecar = export.export(workdir, out)
  assert sidecar["workdir"] == workdir and sidecar["checkpoint_step"] == STEPS
  variables, loaded = export.load(out)
  assert loaded == sidecar == json.loads(paths.read_text(f"{workdir}/export/backbone.json"))
  trained = list(flatten(parallel.to_host(state.params)).values())
  exported = flatten(variables["params"])
  assert exported
  for name, value in exported.items():  # the trained backbone's own values
    assert any(v.shape == value.shape and np.array_equal(v, value) for v in trained), name
  assert os.listdir(tmp_path) == []  # nothing written locally


def test_cli_errors_are_one_line_not_a_traceback(tiny_data_dir, tmp_path):
  command = _experiment(tmp_path / "run", tiny_data_dir) + ["--config.optimizer.learning_rate=nan"]
  result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert "error: optimizer.learning_rate=nan" in result.stderr
  assert "Traceback" not in result.stderr

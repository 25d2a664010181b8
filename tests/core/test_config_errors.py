"""Bad configuration values and missing data fail early with errors that say what to do."""
import jax
import pytest

from ssl_jax import methods
from ssl_jax.core import errors, parallel, rundir
from ssl_jax.data import sources
from ssl_jax.training import engine
from train_worker import tiny_config


def _build(config):
  return engine.build(config, parallel.make_mesh())


def test_unknown_method(tiny_data_dir):
  config = tiny_config(tiny_data_dir, 4)
  config.method = "simclrr"
  with pytest.raises(ValueError, match=r"config.method='simclrr'.*simclr"):
    _build(config)


def test_batch_not_divisible_by_devices(tiny_data_dir):
  config = tiny_config(tiny_data_dir, 4)
  config.global_batch_size = 0
  with pytest.raises(ValueError, match="global_batch_size=0"):
    _build(config)


def test_bad_temperature(tiny_data_dir):
  config = tiny_config(tiny_data_dir, 4)
  config.simclr.temperature = 0.0
  _, init, _ = _build(config)
  with pytest.raises(ValueError, match="simclr.temperature=0.0"):
    init(jax.random.PRNGKey(0))


def test_missing_dataset_names_prepare_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m ssl_jax.data.prepare fashion_mnist"):
    sources.get_source("fashion_mnist", "train", str(tmp_path / "empty"))


def test_missing_workdir_for_evaluate(tmp_path):
  from ssl_jax import evaluate
  with pytest.raises(FileNotFoundError, match="config.json"):
    evaluate.run(str(tmp_path), ["linear"])


def test_bad_eval_mode(tmp_path):
  from ssl_jax import evaluate
  with pytest.raises(ValueError, match="--mode linaer"):
    evaluate.run(str(tmp_path), ["linaer"])


def test_methods_are_discovered():
  assert "simclr" in methods.available()



@pytest.mark.parametrize("configured, error", [("linear,knnn", "--mode linear,knnn"),
                                               ("none", "--mode : expected one or more")])
def test_evaluate_without_modes_reads_the_run_config(tmp_path, configured, error):
  """`evaluate --workdir W` with no --mode runs the run's own config.eval.modes (checked
  here through their validation, before any checkpoint is read)."""
  from ssl_jax import evaluate
  from experiments import simclr
  config = simclr.get_config("fashion_mnist,smoke")
  config.eval.modes = configured
  rundir.save_config(config, str(tmp_path))
  with pytest.raises(ValueError, match=error):
    evaluate.run(str(tmp_path))


def test_runs_saved_before_a_field_existed_resume_at_its_default(tmp_path):
  """A config.json written before grad_accumulation, precision and model.remat existed
  resumes under today's defaults; a non-default value is still a change to refuse."""
  import json
  from ssl_jax.training import resume
  from experiments import mae
  config = mae.get_config("fashion_mnist,smoke")
  saved = json.loads(config.to_json_best_effort())
  for name in ("grad_accumulation", "precision"):
    del saved[name]
  del saved["model"]["remat"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  resume.check_config(config, str(tmp_path), note=lambda _: None)
  config.grad_accumulation = 2
  with pytest.raises(errors.ConfigMismatchError, match="grad_accumulation: '<absent>' in the run, 2 now"):
    resume.check_config(config, str(tmp_path), note=lambda _: None)


@pytest.mark.parametrize("env, words", [
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "not JAX_NUM_PROCESSES, JAX_PROCESS_ID"),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2",
      "JAX_PROCESS_ID": "2"}, "0 <= JAX_PROCESS_ID < JAX_NUM_PROCESSES"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "JAX_NUM_PROCESSES='two'"),
])
def test_partial_or_wrong_multihost_variables_are_one_error(env, words, monkeypatch):
  from ssl_jax.core import parallel
  for name in parallel.MULTIHOST_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(errors.ConfigError, match=words.replace("(", r"\(")) as raised:
    parallel.initialize_distributed()
  assert "\n" not in str(raised.value)


def test_a_missing_or_unreadable_tokenizer_names_its_path_and_the_fix(tmp_path):
  from ssl_jax.data import text
  missing = str(tmp_path / "none.json")
  with pytest.raises(errors.DataNotPreparedError, match=f"no tokenizer at {missing}; .*data.text"):
    text.load_tokenizer(missing)
  damaged = tmp_path / "tokenizer.json"
  damaged.write_text('{"version": "1.0", "model": {"type": "Word')
  with pytest.raises(errors.DataNotPreparedError, match=f"{damaged} cannot be read") as raised:
    text.load_tokenizer(str(damaged))
  assert "\n" not in str(raised.value)

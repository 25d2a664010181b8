"""The one check pass: train.check validates every section of the config before anything
(mesh, method, optimizer, data) is built, and every bad value is a one-line ConfigError."""
import pytest

from experiments import mae, mlm, simclr
from ssl_jax import train
from ssl_jax.core import errors, parallel
from ssl_jax.data import sources
from ssl_jax.training import engine

BAD_VALUES = [  # (experiment, field path, bad value, words the message must hold)
    (simclr, "total_steps", 0, "total_steps=0"),
    (simclr, "global_batch_size", -8, "global_batch_size=-8"),
    (simclr, "precision", "fp16", "precision='fp16'"),
    (simclr, "sharding.fsdp", 0, "sharding.fsdp=0"),
    (simclr, "data.modality", "audio", "data.modality='audio'"),
    (simclr, "data.image_size", 0, "data.image_size=0"),
    (simclr, "model.depth", 11, "model.depth=11"),
    (simclr, "model.remat", "some", "model.remat='some'"),
    (simclr, "optimizer.learning_rate", float("nan"), "optimizer.learning_rate=nan"),
    (simclr, "eval.modes", "linear,knnn", "knnn"),
    (simclr, "eval.monitor", "finetune", "eval.monitor='finetune'"),
    (simclr, "eval.batch_size", 0, "eval.batch_size=0"),
    (mae, "model.num_heads", 5, "not divisible"),
    (mae, "model.pool", "max", "model.pool='max'"),
    (mae, "mae.mask_ratio", 0.0, "keeps 49 of the 49 patches"),
    (mae, "mae.mask_ratio", 0.99, "keeps 0 of the 49 patches"),
    (mlm, "model.dropout_rate", 1.0, "model.dropout_rate=1.0"),
    (mlm, "data.max_length", 1, "data.max_length=1"),
    # The held-out bad inputs of the "run where the users run" journeys, verbatim.
    (simclr, "model.name", "foo", "config.model.name='foo' does not exist"),
    (simclr, "model.depth", 19, "model.depth=19 is not a ResNet depth"),
    (mae, "model.variant", "XXL", "model.variant='XXL'"),
    (simclr, "views.pair.crop_size", 0, "views.pair.crop_size must be a positive int"),
    (simclr, "simclr.temperature", 0.0, "simclr.temperature=0.0"),
    (mlm, "mlm.mask_rate", 0.0, "mlm.mask_rate=0.0"),
]


def _set(config, path, value):
  *parents, name = path.split(".")
  section = config
  for part in parents:
    section = section[part]
  section[name] = value


@pytest.fixture
def nothing_is_built(monkeypatch):
  """Building a mesh, a train step or a data source fails the test: the check must come first."""
  def built(*args, **kwargs):
    raise AssertionError("built before the config was checked")
  monkeypatch.setattr(parallel, "make_mesh", built)
  monkeypatch.setattr(engine, "build", built)
  monkeypatch.setattr(sources, "get_source", built)


@pytest.mark.parametrize("experiment, path, value, words", BAD_VALUES,
                         ids=[f"{e.__name__.split('.')[-1]}:{p}" for e, p, _, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_before_anything_is_built(experiment, path, value, words,
                                                           nothing_is_built, tmp_path):
  config = experiment.get_config("fortunes,smoke" if experiment is mlm else "fashion_mnist,smoke")
  config.eval.monitor_every_steps = 1  # the monitor's section is checked when it runs
  _set(config, path, value)
  with pytest.raises(errors.ConfigError) as raised:
    train.train(config, str(tmp_path / "run"))
  message = str(raised.value)
  assert words in message and "\n" not in message
  assert not (tmp_path / "run").exists()  # nothing was written either


@pytest.mark.parametrize("experiment", [simclr, mae, mlm], ids=["simclr", "mae", "mlm"])
def test_the_smoke_configs_pass_the_check(experiment):
  train.check(experiment.get_config("fortunes,smoke" if experiment is mlm else
                                    "fashion_mnist,smoke"))


def test_every_user_error_is_caught_as_one_line(capsys):
  """fail_cleanly turns each user error class into `error: ...` and exit status 1."""
  from ssl_jax.core import log
  user_errors = [cls for cls in vars(errors).values()
                 if isinstance(cls, type) and issubclass(cls, errors.UserError)]
  assert len(user_errors) >= 9
  for cls in user_errors:
    with pytest.raises(SystemExit) as exited, log.fail_cleanly():
      raise cls(f"{cls.__name__} happened; do this")
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: {cls.__name__} happened; do this"
  with pytest.raises(KeyError), log.fail_cleanly():  # a bug keeps its traceback
    raise KeyError("bug")
  with pytest.raises(SystemExit) as exited, log.fail_cleanly():  # a second Ctrl-C
    raise KeyboardInterrupt
  assert exited.value.code == 130
  assert capsys.readouterr().err.strip().startswith("interrupted: stopped at once")


def test_evaluate_checks_its_settings_before_reading_a_checkpoint(tmp_path):
  """`--eval FIELD=VALUE` overrides are checked with the run's config.eval before any
  checkpoint is read (this workdir has none, so a later check would fail otherwise)."""
  from ssl_jax import evaluate
  from ssl_jax.core import rundir
  rundir.save_config(simclr.get_config("fashion_mnist,smoke"), str(tmp_path))
  with pytest.raises(errors.ConfigError, match="eval.knn.temperature") as raised:
    evaluate.run(str(tmp_path), ["knn"], overrides=["knn.temperature=0"])
  assert "\n" not in str(raised.value)


@pytest.mark.parametrize("command", ["ssl_jax.evaluate", "ssl_jax.export"])
def test_a_workdir_without_a_run_is_one_error_line(command, tmp_path):
  import subprocess
  import sys
  args = ["--workdir", str(tmp_path / "none")]
  if command == "ssl_jax.export":
    args += ["--out", str(tmp_path / "x.safetensors")]
  result = subprocess.run([sys.executable, "-m", command, *args], capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 1, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: ") and \
      "is '" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_split_is_one_line_and_leaves_no_workdir(tiny_data_dir, tmp_path):
  config = simclr.get_config("fashion_mnist,smoke")
  config.data.data_dir, config.data.train_split = tiny_data_dir, "trian"
  with pytest.raises(errors.ConfigError) as raised:
    train.train(config, str(tmp_path / "run"))
  assert "Bad split 'trian'" in str(raised.value) and "\n" not in str(raised.value)
  assert not (tmp_path / "run").exists()

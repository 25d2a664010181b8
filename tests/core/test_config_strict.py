"""Configs are strict: a misspelt field in any section is rejected by name, with the
closest valid names, from Python and from the command line alike."""
import importlib
import os
import subprocess
import sys

import ml_collections
import pytest

from experiments import common, simclr as simclr_experiment
from ssl_jax import evals, methods
from ssl_jax.core import errors
from ssl_jax.data import presets
from ssl_jax.evals import knn, linear
from ssl_jax.methods import simclr
from ssl_jax.methods.lib import views
from ssl_jax.training import optim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("make, typo, section, meant", [
    (simclr.default_config, "temprature", "config.simclr", "temperature"),
    (optim.default_config, "learnin_rate", "config.optimizer", "learning_rate"),
    (evals.default_config, "monitor_every_step", "config.eval", "monitor_every_steps"),
    (knn.default_config, "temperatur", "config.eval.knn", "temperature"),
    (linear.default_config, "learning_rate", "config.eval.linear", "learning_rates"),
    (views.group, "crop_sise", "config.views.<group>", "crop_size"),
])
def test_misspelt_field_from_python_is_named(make, typo, section, meant):
  with pytest.raises(errors.ConfigError) as error:
    make(**{typo: 1})
  message = str(error.value)
  assert f"{section} has no field {typo!r}" in message and f"did you mean {meant!r}" in message


def test_built_sections_refuse_new_fields():
  config = simclr_experiment.get_config("fashion_mnist")
  sections = [name for name, value in config.items() if isinstance(value, ml_collections.ConfigDict)]
  assert {"data", "model", "views", "simclr", "optimizer", "eval"} <= set(sections)
  for path in ("data", "model", "simclr", "optimizer", "eval", "eval.knn", "eval.linear",
               "views.pair"):
    section = config
    for name in path.split("."):
      section = section[name]
    with pytest.raises(AttributeError, match="zz_typo"):
      section.zz_typo = 1  # an experiment file's typo


def test_every_section_typo_on_the_command_line_is_one_line(capsys):
  config = simclr_experiment.get_config("fashion_mnist,smoke")
  paths = ["seed"] + [f"{name}.zz_typo" for name, v in config.items()
                      if isinstance(v, ml_collections.ConfigDict)]
  for path in paths[1:]:
    with pytest.raises(SystemExit) as exit_info:
      common.check_overrides(["prog", f"--config.{path}=1"], config)
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: config.{path.rsplit('.', 1)[0]} has no field 'zz_typo'")
  common.check_overrides(["prog", "--config.seed=3", "--config.eval.knn.ks=(5,)"], config)


def test_cli_typo_exits_with_a_suggestion_not_a_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.simclr", "--smoke", "--workdir", str(tmp_path / "w"),
       "--config.simclr.temprature=0.5"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "error: config.simclr has no field 'temprature'; did you mean 'temperature'?" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "w").exists()


def test_experiment_argument_errors():
  with pytest.raises(errors.ConfigError, match="no preset"):
    common.parse_arg("mnist")
  assert common.parse_arg("cifar10,smoke") == ("cifar10", True)
  assert common.parse_arg(None) == ("fashion_mnist", False)
  assert set(presets.available()) == {"fashion_mnist", "cifar10", "imagenet2012", "photo_crops",
                                   "fortunes", "wikipedia", "fashion_mnist_captions",
                                   "coco_captions", "moving_fashion_mnist"}
  with pytest.raises(errors.ConfigError, match="grey"):
    importlib.import_module("experiments.colorization").get_config("fashion_mnist")
  with pytest.raises(errors.ConfigError, match="'cifar10' holds image data, not text data"):
    importlib.import_module("experiments.mlm").get_config("cifar10")
  with pytest.raises(errors.ConfigError, match="'wikipedia' holds text data, not image data"):
    importlib.import_module("experiments.moco").get_config("wikipedia")
  with pytest.raises(errors.ConfigError, match="'fashion_mnist' holds image data, not video"):
    importlib.import_module("experiments.frame_order").get_config("fashion_mnist")


@pytest.mark.parametrize("method", methods.available())
def test_every_method_section_is_strict(method):
  """Each method's default_config names its section and the closest field, and the
  section its experiment builds refuses a new field."""
  defaults = methods.get(method).default_config()
  fields = sorted(defaults.keys())
  typo = fields[0][:-1] + ("x" if fields[0][-1] != "x" else "y") if fields else "zz_typo"
  with pytest.raises(errors.ConfigError) as error:
    methods.get(method).default_config(**{typo: 1})
  assert f"config.{method} has no field {typo!r}" in str(error.value)
  if fields:  # a section with fields names the closest (clm's has none)
    assert f"did you mean {fields[0]!r}" in str(error.value)
  # The experiment's own default dataset (text and image-text methods have theirs).
  config = importlib.import_module(f"experiments.{method}").get_config(None)
  with pytest.raises(AttributeError, match="zz_typo"):
    config[method].zz_typo = 1

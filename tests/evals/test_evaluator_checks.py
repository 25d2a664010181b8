"""Every evaluator's check_config: the check pass (train.check, evals.check_config) runs it
on config.eval.<name> before anything is built; it must pass the defaults, refuse a bad
value with a one-line ConfigError naming the field as eval.<name>.<field>, and the
evaluator's own entry point must refuse it too, before any work."""
import numpy as np
import pytest

from ssl_jax import evals
from ssl_jax.core import errors
from ssl_jax.evals import knn, linear, objective, zeroshot

EVALUATORS = evals.available()

# evaluator: (field of config.eval.<name>, a value it refuses, words its message holds)
BAD_VALUES = {
    "finetune": ("layer_decay", 1.5, "eval.finetune.layer_decay=1.5"),
    "knn": ("temperature", 0.0, "eval.knn.temperature=0.0"),
    "linear": ("holdout_fraction", 1.5, "eval.linear.holdout_fraction=1.5"),
    "objective": ("batch_size", 0, "eval.objective.batch_size=0"),
    "zeroshot": ("template", "a photo", "eval.zeroshot.template='a photo'"),
}

MORE_BAD_VALUES = [  # (evaluator, field, value, words)
    ("knn", "ks", (20, 0), "eval.knn.ks=(20, 0)"),
    ("knn", "ks", (), "eval.knn.ks=()"),
    ("linear", "holdout_fraction", 0.0, "eval.linear.holdout_fraction=0.0"),
    ("linear", "epochs", 0, "eval.linear.epochs=0"),
    ("linear", "batch_size", 0, "eval.linear.batch_size=0"),
    ("linear", "learning_rates", (), "eval.linear.learning_rates=()"),
    ("linear", "learning_rates", (0.1, -1.0), "eval.linear.learning_rates=-1.0"),
    ("linear", "weight_decays", (-1e-4,), "eval.linear.weight_decays=-0.0001"),
    ("linear", "seed", -1, "eval.linear.seed=-1"),
    ("finetune", "frozen_blocks", -2, "eval.finetune.frozen_blocks=-2"),
    ("objective", "batch_size", -4, "eval.objective.batch_size=-4"),
    ("zeroshot", "template", "a {} of a {}", "eval.zeroshot.template"),
    ("zeroshot", "template", "a {name}", "eval.zeroshot.template"),
    ("zeroshot", "class_names", ("shirt", 3), "eval.zeroshot.class_names"),
]


def section(name, **overrides):
  config = evals.default_config()[name]
  for field, value in overrides.items():
    config[field] = value
  return config


def test_every_evaluator_has_a_check_and_is_listed():
  assert set(BAD_VALUES) == set(EVALUATORS)
  for name in EVALUATORS:
    assert callable(getattr(evals.get(name), "check_config", None)), name


@pytest.mark.parametrize("name", EVALUATORS)
def test_the_defaults_pass(name):
  evals.get(name).check_config(section(name))


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_is_refused(name):
  field, value, words = BAD_VALUES[name]
  with pytest.raises(errors.ConfigError) as raised:
    evals.get(name).check_config(section(name, **{field: value}))
  message = str(raised.value)
  assert words in message and "\n" not in message


@pytest.mark.parametrize("name, field, value, words", MORE_BAD_VALUES,
                         ids=[f"{n}.{f}={v!r}" for n, f, v, _ in MORE_BAD_VALUES])
def test_more_bad_values_are_refused(name, field, value, words):
  with pytest.raises(errors.ConfigError) as raised:
    evals.get(name).check_config(section(name, **{field: value}))
  assert words in str(raised.value)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_the_check_pass_runs_each_evaluators_check(name):
  field, value, words = BAD_VALUES[name]
  config = evals.default_config()
  config[name][field] = value
  with pytest.raises(errors.ConfigError, match=words.replace(".", r"\.").replace("(", r"\(")):
    evals.check_config(config)


def refuse(*args, **kwargs):
  raise AssertionError("the evaluator did work before checking its config")


FEATURES = (np.ones((8, 2), np.float32), np.zeros(8, np.int32))


def test_the_entry_points_check_before_any_work():
  """A caller who skips the check pass gets the same errors, before any work."""
  with pytest.raises(errors.ConfigError, match=r"eval\.knn\.temperature=0\.0"):
    knn.evaluate(FEATURES, FEATURES, num_classes=2, config=section("knn", temperature=0.0))
  with pytest.raises(errors.ConfigError, match=r"eval\.linear\.holdout_fraction=1\.5"):
    linear.linear_probe(*FEATURES, *FEATURES, num_classes=2,
                        config=section("linear", holdout_fraction=1.5))
  with pytest.raises(errors.ConfigError, match=r"eval\.objective\.batch_size=0"):
    objective.evaluate_state({}, method=None, run_config=None, mesh=None,
                             config=section("objective", batch_size=0))
  with pytest.raises(errors.ConfigError, match=r"eval\.zeroshot\.template"):
    zeroshot.evaluate_state({}, method=None, run_config=None, mesh=None,
                            config=section("zeroshot", template="a photo"))

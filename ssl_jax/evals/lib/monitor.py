"""The in-loop monitor: config.eval.monitor (a feature evaluator) on the monitor splits
during pretraining, scoring the pretrained features only."""
from ssl_jax import evals
from ssl_jax.core import errors
from ssl_jax.data import sources
from ssl_jax.evals.lib.extraction import bind, encoder, extract_splits


def check_config(section) -> None:
  """ConfigError unless config.eval.monitor names a feature evaluator."""
  if section.monitor not in evals.available() or evals.input_kind(section.monitor) != "features":
    raise errors.ConfigError(f"eval.monitor={section.monitor!r} trains a network of its own or "
                             "does not exist; the monitor runs feature evaluators: "
                             f"{evals.feature_evaluators()}")


class Monitor:
  """config.eval.monitor on the monitor splits during pretraining (pretrained features only)."""

  def __init__(self, config, mesh, method):
    self.config, self.mesh, self.method = config, mesh, method
    check_config(config.eval)
    self.evaluator = evals.get(config.eval.monitor)
    self.encode = encoder(method, config)
    self.num_classes = sources.dataset_info(config.data.name, config.data.data_dir,
                                            config.data.label_key).num_classes

  def __call__(self, params, method_state) -> dict:
    settings = self.config.eval
    sets = extract_splits(bind(self.encode, params, method_state), self.config,
                          self.mesh, {"train": settings.monitor_train_split,
                                      "test": settings.monitor_test_split}, "monitor")
    (train_x, train_y), (test_x, test_y) = sets["train"], sets["test"]
    primary = next(iter(train_x))
    result = self.evaluator.evaluate((train_x[primary], train_y), (test_x[primary], test_y),
                                     num_classes=self.num_classes,
                                     config=settings[settings.monitor])
    return {f"{settings.monitor}_{key}": value for key, value in _scalars(result).items()}


def _scalars(result: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in result.items():
    if isinstance(value, dict):
      out.update(_scalars(value, f"{prefix}{key}_"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      out[f"{prefix}{key}"] = value
  return out

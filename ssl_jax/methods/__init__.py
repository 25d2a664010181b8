"""Self-supervised objectives, one module per method.

The module path is the registry: `config.method = "simclr"` means
`ssl_jax.methods.simclr`. Every method module exposes the same pure functions:

  default_config() -> ConfigDict                     # the method's own hyper-parameters
  init(rng, config, batch) -> (params, extra)        # extra: batch_stats, EMA target, queue...
  views(batch, rng, config) -> views                 # on-device augmentation / masking
  loss(params, extra, views, rng, config, train=True) -> (loss, (metrics, new_extra))
  update(state, config) -> state                     # after the optimizer step: EMA, queue...
  encode(params, extra, images, config) -> features  # frozen features for evaluation
"""
import importlib
import pkgutil
from types import ModuleType

_NOT_METHODS = {"common"}


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_METHODS)


def get(name: str) -> ModuleType:
  """The method module for `config.method`, with an error listing the valid names."""
  if name not in available():
    raise ValueError(f"config.method={name!r} is not a method; available: {available()}")
  return importlib.import_module(f"{__name__}.{name}")

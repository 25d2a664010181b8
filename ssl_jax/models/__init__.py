"""Flax (linen) networks, one family per file: resnet.py (backbones), heads.py (MLP heads).

`config.model.name = "resnet"` means `ssl_jax.models.resnet`; each family file exposes a
module-level `build(model_config)`.
"""
import importlib
import pkgutil

_NOT_FAMILIES = {"conv", "heads"}


def build(model_config):
  """The backbone for `config.model`: `ssl_jax.models.<name>.build(model_config)`."""
  families = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_FAMILIES)
  if model_config.name not in families:
    raise ValueError(f"config.model.name={model_config.name!r} is not a model family; "
                     f"available: {families}")
  return importlib.import_module(f"{__name__}.{model_config.name}").build(model_config)

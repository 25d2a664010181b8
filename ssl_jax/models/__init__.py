"""Flax (linen) networks, one family per file: resnet.py and vit.py (backbones), heads.py
(MLP heads).

`config.model.name = "resnet"` means `ssl_jax.models.resnet`; each family file exposes a
module-level `build(model_config)` returning a module called as `(inputs, train)`.
"""
import importlib
import pkgutil

from ssl_jax import views

_NOT_FAMILIES = {"conv", "heads", "remat"}


def families() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_FAMILIES)


def build(model_config):
  """The backbone for `config.model`: `ssl_jax.models.<name>.build(model_config)`."""
  if model_config.name not in families():
    raise ValueError(f"config.model.name={model_config.name!r} is not a model family; "
                     f"available: {families()}")
  return importlib.import_module(f"{__name__}.{model_config.name}").build(model_config)


def variables(params, batch_stats=None) -> dict:
  """A backbone's flax variables: its params, and its BatchNorm statistics if it has any."""
  return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def encode_images(backbone_variables: dict, images, config):
  """Frozen backbone features [B, D] of uint8 images [B, H, W, C], at the evaluation
  resolution and normalisation: what every image method's `encode` returns, and what
  fine-tuning and exported weights start from."""
  return build(config.model).apply(backbone_variables, views.evaluation_images(images, config),
                                   train=False)

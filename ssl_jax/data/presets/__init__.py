"""Dataset presets: the `config.data` section of each dataset, one module per dataset.

A preset module is the registry entry (core/registry.py): `data_config(**overrides)`
returns its locked, strict section, and `TRAIN_EXAMPLES` (optional) is the size of its
train split, for configs that count in epochs. Experiments compose any method with any
preset (`python -m experiments.simclr --dataset cifar10`). Adding a dataset is one file
here (plus, for data built offline, its TFDS builder in data/builders/); the fields every
section shares are written once, in _sections.py.
"""
from types import ModuleType

import ml_collections

from ssl_jax.core.errors import ConfigError
from ssl_jax.core.registry import Registry

_REGISTRY = Registry(__name__, "dataset preset")
KINDS = ("image", "text", "image_text", "video")


def available() -> list[str]:
  return _REGISTRY.available()


def get(name: str) -> ModuleType:
  return _REGISTRY.get(name)


def data_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """config.data for the preset `name`; ConfigError for an unknown name or field."""
  return get(name).data_config(**overrides)


def train_examples(name: str) -> int:
  """Examples in the preset's train split (configs that count in epochs divide by it)."""
  count = getattr(get(name), "TRAIN_EXAMPLES", None)
  if count is None:
    raise ConfigError(f"dataset preset {name!r} does not declare TRAIN_EXAMPLES, so a recipe "
                      "counted in epochs cannot be built on it")
  return count


def for_data_name(data_name: str) -> str | None:
  """The preset whose data section reads the TFDS dataset `data_name` (config.data.name),
  or None: how a built config finds its preset again (its train size, for instance)."""
  return next((n for n in available() if data_config(n).name == data_name), None)


def kind(name: str) -> str:
  """"text" (token sequences), "video" (frame sequences), "image_text" (images with
  captions) or "image"."""
  data = data_config(name)
  if data.modality in ("text", "video"):
    return data.modality
  return "image_text" if "text_key" in data else "image"


def names(of_kind: str) -> list[str]:
  """The presets of one kind (KINDS), for experiments that need, e.g., captions."""
  return [name for name in available() if kind(name) == of_kind]

"""Offline TFDS builders: one module per dataset this project builds with no network.

Importing the package imports every module in it, which registers each builder with
TFDS, so adding an offline dataset is adding its builder file here (and its preset in
data/presets/). A module may declare `ALIAS`, the friendly name that means its builder
(`fashion_mnist` is `fashion_mnist_local`, built from the Debian IDX files).
"""
import importlib
import pkgutil

import tensorflow_datasets as tfds


def _builders() -> tuple[tuple[str, ...], dict[str, str], dict[str, str]]:
  """(every builder's registered name, {alias: builder name}, {builder name: module})."""
  names, aliases, modules = [], {}, {}
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f"{__name__}.{info.name}")
    for value in vars(module).values():
      if (isinstance(value, type) and issubclass(value, tfds.core.GeneratorBasedBuilder)
          and value.__module__ == module.__name__):
        names.append(value.name)
        modules[value.name] = module.__name__
        if hasattr(module, "ALIAS"):
          aliases[module.ALIAS] = value.name
  return tuple(sorted(names)), aliases, modules


NAMES, ALIASES, MODULES = _builders()

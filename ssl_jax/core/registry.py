"""The one registry idiom: a package's modules are its entries, found by module path.

`config.method = "simclr"` is `ssl_jax.methods.simclr`, `--mode knn` is
`ssl_jax.evals.knn`, `config.model.name = "resnet"` is `ssl_jax.models.resnet`, a dataset
preset "cifar10" is `ssl_jax.data.presets.cifar10` (big_vision's way: no decorators, no
class hierarchy). Subpackages (`lib/`) and modules whose names start with "_" are
helpers, not entries. Adding an entry is adding a file.
"""
import importlib
import pkgutil
from types import ModuleType

from ssl_jax.core.errors import ConfigError


class Registry:
  """The entries of `package` (a dotted name), for the config field `field`."""

  def __init__(self, package: str, field: str, *, helpers: tuple[str, ...] = (),
               outside: bool = False):
    self.package, self.field, self.helpers, self.outside = package, field, helpers, outside

  def available(self) -> list[str]:
    path = importlib.import_module(self.package).__path__
    return sorted(m.name for m in pkgutil.iter_modules(path)
                  if not m.ispkg and not m.name.startswith("_") and m.name not in self.helpers)

  def get(self, name: str) -> ModuleType:
    """The entry module; ConfigError listing the valid names for any other name. With
    `outside`, a name that is not an entry is imported as a module path (an entry that
    lives in a fork's own folder or a test)."""
    if name in self.available():
      return importlib.import_module(f"{self.package}.{name}")
    if self.outside and isinstance(name, str) and name:
      try:
        return importlib.import_module(name)
      except ModuleNotFoundError:
        pass
    hint = " (or the importable module path of one outside the package)" if self.outside else ""
    raise ConfigError(f"{self.field}={name!r} does not exist; available: "
                      f"{', '.join(self.available())}{hint}")

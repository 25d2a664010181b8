"""View groups: the augmented inputs image methods train on, built inside the jitted step.

`config.views` is a ConfigDict of named groups: a sequence whose items have names, so
one group can be overridden from the command line as `--config.views.local_crops.count=8`.
ConfigDict keeps its keys sorted, so the groups come in alphabetical order of their names
(name them so: `first`/`second`, `global_crops`/`local_crops`). Each group is one augmentation config
(`augment.default_view_config` fields) plus `count`, the number of views it makes of
every image:

  SimCLR:  views.pair = group(count=2, crop_size=24, ...)
  BYOL:    views.first = group(count=1, blur_prob=1.0, solarize_prob=0.0)
           views.second = group(count=1, blur_prob=0.1, solarize_prob=0.2)
  DINO:    views.global_crops = group(count=2, crop_size=224, crop_scale=(0.4, 1.0))
           views.local_crops = group(count=6, crop_size=96, crop_scale=(0.05, 0.4))

`make(images, rng, config)` returns one array per group, in that order: [count * B, S, S, C],
view-major (all images' first view, then all images' second view, ...). Groups of
different crop sizes are separate arrays of the one jitted step.

`check_config(config)` refuses, from the config alone, what `make` cannot use (no group,
a count below 1, an augmentation value out of range); the methods' check_config call it
(or `check_one_group` / `check_two_views` for the structure they need), and so does
`make`, so the check pass and a direct call give the same ConfigError.
"""
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.core.errors import ConfigError
from ssl_jax.data import augment


def group(count: int = 1, **augment_fields) -> ml_collections.ConfigDict:
  """One view group: `count` views per image with these augmentation settings."""
  config = augment.default_view_config(**augment_fields)
  config.count = count  # views of every image this group makes
  config.lock()
  return config


def _groups(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  groups = list(config.views.items())
  if not groups:
    raise ConfigError("config.views holds no view group; add one, e.g. "
                      "config.views.pair = views.group(count=2)")
  for name, settings in groups:
    if not isinstance(settings.get("count"), int) or settings.count < 1:
      raise ConfigError(f"views.{name}.count={settings.get('count')!r}; must be an integer >= 1")
  return groups


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first view group of config.views that `make` cannot use: none at
  all, a count below 1, or an augmentation value out of range (augment.check_view_config)."""
  for name, settings in _groups(config):
    augment.check_view_config(settings, f"views.{name}")


def check_one_group(config: ml_collections.ConfigDict, count: int, message: str) -> None:
  """check_config, then ConfigError(message) unless config.views is one group of `count`."""
  check_config(config)
  groups = list(config.views.values())
  if len(groups) != 1 or groups[0].count != count:
    raise ConfigError(message)


def total_views(config: ml_collections.ConfigDict) -> int:
  return sum(settings.count for _, settings in _groups(config))


def make(images: jax.Array, rng: jax.Array, config: ml_collections.ConfigDict) -> list[jax.Array]:
  """Normalised views of every image for every group: a list with one array per group.

  View v over all groups (counted in order) uses `jax.random.split(rng, total)[v]`, and
  each image its own key under it (augment.random_views), so the views of an image do not
  depend on how the batch is sharded.
  """
  check_config(config)
  groups = _groups(config)
  keys = jax.random.split(rng, sum(settings.count for _, settings in groups))
  out, used = [], 0
  for _, settings in groups:
    batch = [augment.random_views(images, keys[used + v], settings) for v in range(settings.count)]
    used += settings.count
    out.append(augment.normalize(jnp.concatenate(batch), config.data.mean, config.data.std))
  return out


def check_two_views(config: ml_collections.ConfigDict, method: str) -> None:
  """ConfigError unless config.views makes two views of every image of one crop size, as
  `two_views` needs, then check_config."""
  groups = _groups(config)
  counts = [settings.count for _, settings in groups]
  sizes = {settings.crop_size for _, settings in groups}
  if counts not in ([2], [1, 1]) or len(sizes) != 1:
    raise ConfigError(f"{method} needs two views of every image of one crop size: one view group "
                      "of count 2 (views.pair) or two of count 1 (views.first, views.second); got "
                      + ", ".join(f"{name} (count {s.count}, crop_size {s.crop_size})"
                                  for name, s in groups))
  check_config(config)


def two_views(images: jax.Array, rng: jax.Array, config: ml_collections.ConfigDict,
              method: str) -> jax.Array:
  """Two views of every image as one array [2B, S, S, C] (all first views, then all second
  views), for the methods that run both through one forward pass. Either one group of
  count 2 (symmetric augmentation: `pair`) or two groups of count 1 and one crop size
  (asymmetric: `first`/`second`, BYOL's blur and solarisation)."""
  check_two_views(config, method)
  return jnp.concatenate(make(images, rng, config))

"""The checks of view configs: augment.check_view_config (one group's values) and
views.check_config (config.views), decided from the config alone and raised as
ConfigError naming the group; random_view and center_view refuse the same values."""
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from ssl_jax.core import errors
from ssl_jax.data import augment
from ssl_jax.methods.lib import multicrop, views

BAD_VIEW_VALUES = [  # (field, value, words)
    ("crop_size", 0, "views.pair.crop_size must be a positive int, got 0"),
    ("crop_size", 24.0, "views.pair.crop_size must be a positive int, got 24.0"),
    ("flip_prob", 1.5, "views.pair.flip_prob must be a probability in [0, 1], got 1.5"),
    ("jitter_prob", -0.1, "views.pair.jitter_prob must be a probability"),
    ("grayscale_prob", float("nan"), "views.pair.grayscale_prob must be a probability"),
    ("blur_prob", 2, "views.pair.blur_prob must be a probability"),
    ("solarize_prob", 1.01, "views.pair.solarize_prob must be a probability"),
    ("hue", 0.6, "views.pair.hue must be in [0, 0.5], got 0.6"),
]


def run_config(**groups):
  config = ml_collections.ConfigDict()
  config.data = ml_collections.ConfigDict({"mean": (0.5,), "std": (0.25,)})
  config.views = ml_collections.ConfigDict(groups)
  return config


def test_the_defaults_and_a_group_pass():
  augment.check_view_config(augment.default_view_config())
  views.check_config(run_config(pair=views.group(count=2, crop_size=24)))


@pytest.mark.parametrize("field, value, words", BAD_VIEW_VALUES,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_VIEW_VALUES])
def test_a_bad_view_value_names_its_group(field, value, words):
  # Built from a dict: a view group's own type checks refuse some of these already.
  group = ml_collections.ConfigDict({**views.group(count=2).to_dict(), field: value})
  with pytest.raises(errors.ConfigError) as raised:
    views.check_config(run_config(pair=group))
  assert words in str(raised.value)
  with pytest.raises(errors.ConfigError, match=r"views\.<group>\." + field):
    augment.check_view_config(group)


def test_a_probability_that_is_not_a_number_is_a_config_error():
  config = ml_collections.ConfigDict({**augment.default_view_config().to_dict(),
                                      "flip_prob": "often"})
  with pytest.raises(errors.ConfigError, match="views.first.flip_prob"):
    augment.check_view_config(config, "views.first")


def test_view_groups_are_checked():
  with pytest.raises(errors.ConfigError, match="holds no view group"):
    views.check_config(run_config())
  bad = views.group(count=2)
  bad.unlock()
  bad.count = 0
  with pytest.raises(errors.ConfigError, match=r"views\.pair\.count=0; must be an integer >= 1"):
    views.check_config(run_config(pair=bad))
  with pytest.raises(errors.ConfigError, match="SimCLR needs exactly one"):
    views.check_one_group(run_config(first=views.group(), second=views.group()), 2,
                          "SimCLR needs exactly one view group with count=2")
  with pytest.raises(errors.ConfigError, match="one crop size"):
    views.check_two_views(run_config(first=views.group(crop_size=24),
                                     second=views.group(crop_size=20)), "VICReg")
  views.check_two_views(run_config(pair=views.group(count=2)), "VICReg")


def test_multicrop_checks_the_groups_it_makes():
  config = run_config(global_crops=views.group(count=2, crop_size=24),
                      local_crops=views.group(count=2, crop_size=12, hue=0.7))
  with pytest.raises(errors.ConfigError, match=r"views\.local_crops\.hue"):
    multicrop.check_config(config, "DINO")
  config.views.local_crops.count = 0  # no multi-crop: the group is dropped, not checked
  multicrop.check_config(config, "DINO")
  with pytest.raises(errors.ConfigError, match="reads only the view groups"):
    multicrop.check_config(run_config(global_crops=views.group(count=2), pair=views.group()),
                           "DINO")


def test_the_functions_that_checked_before_still_refuse():
  """random_view, views.make and center_view raise the same ConfigError (a ValueError)."""
  image = jnp.zeros((8, 8, 3), jnp.uint8)
  with pytest.raises(errors.ConfigError, match="flip_prob must be a probability"):
    augment.random_view(image, jax.random.key(0), augment.default_view_config(flip_prob=1.5))
  group = views.group(count=1, crop_size=8)
  group.unlock()
  group.hue = 0.9
  with pytest.raises(errors.ConfigError, match=r"views\.crops\.hue must be in \[0, 0\.5\]"):
    views.make(jnp.zeros((2, 8, 8, 1), jnp.uint8), jax.random.key(0), run_config(crops=group))
  with pytest.raises(errors.ConfigError, match=r"crop_fraction must be in \(0, 1\]"):
    augment.center_view(jnp.zeros((2, 8, 8, 3)), 8, crop_fraction=0.0)
  with pytest.raises(ValueError, match="B, H, W, C"):  # an array's shape: a plain ValueError
    augment.center_view(jnp.zeros((8, 8, 3)), 8)

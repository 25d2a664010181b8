"""Tests for ssl_jax.data.augment: shapes, determinism, each op against numpy, probabilities, sharding."""
import colorsys
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.data import augment

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601


_COMPILED = {}


def views(images, key=0, **overrides):
  """Jitted random_views; one jitted function per config so tests sharing a config compile once."""
  name = json.dumps(overrides, sort_keys=True)
  if name not in _COMPILED:
    config = augment.default_view_config(**overrides)
    _COMPILED[name] = jax.jit(lambda x, k: augment.random_views(x, k, config))
  key = jax.random.key(key) if isinstance(key, int) else key
  return np.asarray(_COMPILED[name](jnp.asarray(images), key))


def plain(**overrides):
  """Config overrides that keep the whole image and turn every op off."""
  config = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
                grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
  config.update(overrides)
  return config


def rand_images(shape, seed=0, low=0.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def uint8_images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ------------------------------------------------------------- shapes, range, keys

ALL_OPS = dict(blur_prob=0.5, solarize_prob=0.2)


@pytest.mark.parametrize("shape,crop_size,as_float", [((6, 28, 28, 1), 20, False), ((8, 16, 16, 3), 16, True),
                                                      ((6, 32, 40, 3), 24, False)])
def test_shape_dtype_and_range(shape, crop_size, as_float):
  images = rand_images(shape) if as_float else uint8_images(shape)
  out = views(images, crop_size=crop_size, **ALL_OPS)
  assert out.shape == (shape[0], crop_size, crop_size, shape[-1])
  assert out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0


# Most tests below share this config and input shape, so they share one compilation.
MAIN = dict(crop_size=16, **ALL_OPS)


def test_same_key_is_bitwise_deterministic_and_keys_differ():
  images = uint8_images((8, 16, 16, 3))
  first, again = views(images, key=3, **MAIN), views(images, key=3, **MAIN)
  np.testing.assert_array_equal(first, again)
  other = views(images, key=4, **MAIN)
  assert all(np.abs(first[i] - other[i]).max() > 1e-3 for i in range(8))


def test_each_example_gets_its_own_randomness():
  images = np.repeat(uint8_images((1, 16, 16, 3)), 8, axis=0)
  out = views(images, **MAIN)
  for i in range(8):
    for j in range(i):
      assert np.abs(out[i] - out[j]).max() > 1e-3, (i, j)


def test_views_equal_single_image_views_with_split_keys():
  """random_views is random_view per example with key split(key, B)[i], also under vmap."""
  images = uint8_images((8, 16, 16, 3))
  config = augment.default_view_config(**MAIN)
  key = jax.random.key(5)
  batch = views(images, key, **MAIN)
  single = jax.jit(lambda x, k: augment.random_view(x, k, config))
  for i, k in enumerate(jax.random.split(key, 8)):
    np.testing.assert_allclose(batch[i], single(images[i], k), atol=1e-6)


def test_raw_uint32_keys_work():
  out = views(uint8_images((2, 8, 8, 1)), jax.random.PRNGKey(0), crop_size=8, **plain())
  assert out.shape == (2, 8, 8, 1)


def test_bad_inputs_name_the_problem():
  config = augment.default_view_config()
  with pytest.raises(ValueError, match="C in"):
    augment.random_view(jnp.zeros((8, 8, 2)), jax.random.key(0), config)
  with pytest.raises(ValueError, match="flip_prob"):
    augment.random_view(jnp.zeros((8, 8, 3)), jax.random.key(0), augment.default_view_config(flip_prob=1.5))
  with pytest.raises(ValueError, match="flip_probability"):
    augment.default_view_config(flip_probability=0.5)
  with pytest.raises(ValueError, match="B, H, W, C"):
    augment.random_views(jnp.zeros((8, 8, 3)), jax.random.key(0), config)


# -------------------------------------------------------- each op against numpy


def test_full_crop_is_identity_and_resize_matches_jax_image():
  images = rand_images((3, 16, 16, 3))
  np.testing.assert_array_equal(views(images, crop_size=16, **plain()), images)
  resized = jax.image.resize(images, (3, 12, 12, 3), "linear")  # antialiased bilinear
  np.testing.assert_allclose(views(images, crop_size=12, **plain()), resized, atol=1e-6)


def test_crop_falls_back_to_centre_when_no_try_fits():
  images = rand_images((2, 16, 20, 1))  # a 1:1 crop of the whole area cannot fit in 16x20
  np.testing.assert_array_equal(views(images, crop_size=16, **plain()), images[:, :, 2:18])


def test_crop_boxes_stay_inside_image_and_follow_scale_and_ratio():
  u = jax.random.uniform(jax.random.key(0), (500, augment._NUM_UNIFORMS))
  top, left, h, w = map(np.asarray, jax.vmap(
      lambda u: augment._sample_crop_box(u, 64, 64, (0.2, 0.6), (0.5, 2.0)))(u))
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 64).all()
  area = h * w / 64**2
  assert area.min() > 0.18 and area.max() < 0.63 and area.max() - area.min() > 0.3
  aspect = w / h
  assert aspect.min() > 0.45 and aspect.max() < 2.2 and (aspect < 0.8).any() and (aspect > 1.25).any()


def test_flip_equals_numpy_reversed_columns():
  images = rand_images((3, 12, 12, 3))
  np.testing.assert_array_equal(views(images, crop_size=12, **plain(flip_prob=1.0)), images[:, :, ::-1])


def test_grayscale_equals_bt601_luma():
  images = rand_images((3, 12, 12, 3))
  expected = np.repeat((images @ LUMA)[..., None], 3, axis=-1)
  np.testing.assert_allclose(views(images, crop_size=12, **plain(grayscale_prob=1.0)), expected, atol=2e-4)


def test_grayscale_is_a_noop_on_one_channel():
  images = rand_images((3, 12, 12, 1))
  np.testing.assert_array_equal(views(images, crop_size=12, **plain(grayscale_prob=1.0)), images)


def test_solarize_equals_numpy():
  images = rand_images((3, 12, 12, 3))
  out = views(images, crop_size=12, **plain(solarize_prob=1.0, solarize_threshold=0.4))
  np.testing.assert_allclose(out, np.where(images < 0.4, images, 1.0 - images), atol=1e-7)


def test_brightness_contrast_saturation_helpers_match_numpy():
  x = rand_images((12, 12, 3))
  grey = (x @ LUMA)[..., None]
  np.testing.assert_allclose(augment.adjust_brightness(x, 1.3), np.clip(1.3 * x, 0, 1), atol=1e-6)
  np.testing.assert_allclose(augment.adjust_contrast(x, 0.6), np.clip(0.6 * x + 0.4 * grey.mean(), 0, 1), atol=1e-4)
  np.testing.assert_allclose(augment.adjust_saturation(x, 1.5), np.clip(1.5 * x - 0.5 * grey, 0, 1), atol=1e-4)
  g = rand_images((12, 12, 1))
  np.testing.assert_allclose(augment.adjust_contrast(g, 1.4), np.clip(1.4 * g - 0.4 * g.mean(), 0, 1), atol=1e-6)


def test_gaussian_blur_matches_dm_pix():
  import dm_pix
  x = rand_images((20, 20, 3))
  for sigma, kernel_size in ((0.5, 3.2), (1.7, 9.0)):
    np.testing.assert_allclose(augment.gaussian_blur(x, sigma, kernel_size),
                               dm_pix.gaussian_blur(x, sigma, kernel_size), atol=1e-6)


def _numpy_jitter(image, u, config):
  """Reference ColorJitter: sequential ops in numpy, hue through colorsys."""
  grey = lambda x: (x @ LUMA)[..., None]
  factors = [max(0, 1 - s) + v * (1 + s - max(0, 1 - s))
             for v, s in zip(u[augment._JITTER_FACTORS], (config.brightness, config.contrast, config.saturation))]
  delta = -config.hue + u[augment._HUE] * 2 * config.hue
  def hue(x):
    hsv = [colorsys.rgb_to_hsv(*p) for p in x.reshape(-1, 3)]
    return np.array([colorsys.hsv_to_rgb((h + delta) % 1.0, s, v) for h, s, v in hsv]).reshape(x.shape)
  ops = [lambda x: factors[0] * x,
         lambda x: factors[1] * x + (1 - factors[1]) * grey(x).mean(),
         lambda x: factors[2] * x + (1 - factors[2]) * grey(x),
         hue]
  for op in np.argsort(u[augment._JITTER_ORDER]):
    image = np.clip(ops[op](image), 0, 1)
  return image


def test_color_jitter_matches_sequential_reference_in_sampled_order():
  config = augment.default_view_config(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
  images = rand_images((24, 6, 6, 3), seed=1)
  u = np.asarray(jax.random.uniform(jax.random.key(2), (24, augment._NUM_UNIFORMS)))
  out = jax.jit(jax.vmap(lambda x, u: augment._color_jitter(x, u, config)))(images, u)
  for i in range(24):
    np.testing.assert_allclose(out[i], _numpy_jitter(images[i].astype(np.float64), u[i], config), atol=2e-3)
  assert len({tuple(np.argsort(u[i, augment._JITTER_ORDER])) for i in range(24)}) > 5  # many orders exercised


def test_hue_keeps_per_pixel_max_and_min():
  images = rand_images((8, 10, 10, 3))
  out = views(images, crop_size=10, **plain(jitter_prob=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.3))
  np.testing.assert_allclose(out.max(-1), images.max(-1), atol=1e-5)
  np.testing.assert_allclose(out.min(-1), images.min(-1), atol=1e-5)
  assert all(np.abs(out[i] - images[i]).max() > 1e-3 for i in range(8))


def test_brightness_factor_range():
  images = rand_images((200, 6, 6, 1), low=0.2, high=0.6)  # no clipping for factors in [0.6, 1.4]
  out = views(images, crop_size=6, **plain(jitter_prob=1.0, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0))
  ratio = out / images
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1], ratio.shape), rtol=1e-5)
  per_example = ratio[:, 0, 0, 0]
  assert per_example.min() >= 0.6 - 1e-6 and per_example.max() <= 1.4 + 1e-6
  assert per_example.min() < 0.7 and per_example.max() > 1.3


# ------------------------------------------------------------------ probabilities


def _fraction_changed(images, out, expected_changed):
  changed = np.array([np.allclose(o, e, atol=1e-6) for o, e in zip(out, expected_changed)])
  unchanged = np.array([np.allclose(o, i, atol=1e-6) for o, i in zip(out, images)])
  assert (changed ^ unchanged).all(), "every example must be either unchanged or fully transformed"
  return changed.mean()


def test_flip_probability():
  images = rand_images((2000, 6, 6, 1))
  out = views(images, crop_size=6, **plain(flip_prob=0.5))
  assert abs(_fraction_changed(images, out, images[:, :, ::-1]) - 0.5) < 0.05


def test_solarize_and_grayscale_probability():
  images = rand_images((2000, 4, 4, 3), low=0.55, high=1.0)
  solarized = views(images, crop_size=4, **plain(solarize_prob=0.3))
  assert abs(_fraction_changed(images, solarized, 1.0 - images) - 0.3) < 0.05
  grey = views(images, crop_size=4, **plain(grayscale_prob=0.2))
  luma = np.repeat((images @ LUMA)[..., None], 3, axis=-1)
  changed = np.abs(grey - luma).max(axis=(1, 2, 3)) < 2e-4
  assert abs(changed.mean() - 0.2) < 0.05


@pytest.mark.parametrize("op", ["flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"])
def test_probability_zero_never_and_one_always(op):
  images = rand_images((16, 20, 20, 3), low=0.55, high=1.0)
  # 20 px gives a 3-tap blur kernel; sigma >= 1 so that a blur visibly changes the image.
  never = views(images, crop_size=20, **plain(**{op: 0.0}))
  np.testing.assert_array_equal(never, images)
  always = views(images, crop_size=20, **plain(**{op: 1.0}, blur_sigma=(1.0, 2.0)))
  assert all(np.abs(always[i] - images[i]).max() > 1e-3 for i in range(16))


# ----------------------------------------------------------------- eval helpers


def test_center_view():
  images = uint8_images((2, 16, 16, 3))
  np.testing.assert_allclose(augment.center_view(jnp.asarray(images), 16), images / 255, atol=1e-7)
  floats = rand_images((2, 16, 20, 1))
  np.testing.assert_array_equal(augment.center_view(floats, 16), floats[:, :, 2:18])
  np.testing.assert_array_equal(augment.center_view(floats, 8, crop_fraction=0.5), floats[:, 4:12, 6:14])
  np.testing.assert_allclose(augment.center_view(floats[:, :, 2:18], 8),
                             jax.image.resize(floats[:, :, 2:18], (2, 8, 8, 1), "linear"), atol=1e-6)


def test_normalize():
  images = rand_images((2, 4, 4, 3))
  mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
  np.testing.assert_allclose(augment.normalize(images, mean, std), (images - np.array(mean)) / np.array(std), atol=1e-6)
  with pytest.raises(ValueError, match="one mean/std per channel"):
    augment.normalize(images, (0.5,) * 2, (0.5,) * 2)


# ------------------------------------------------------------- sharding invariance

SHARDED_SNIPPET = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec
    from ssl_jax.data import augment
    images_path, out_path, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    config = augment.default_view_config(**config)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    images = jax.device_put(np.load(images_path), sharding)
    fn = jax.jit(lambda x, k: augment.random_views(x, k, config), out_shardings=sharding)
    out = fn(images, jax.random.key(11))
    assert len(out.sharding.device_set) == 8, out.sharding
    np.save(out_path, np.asarray(out))
""")


def test_views_do_not_depend_on_sharding(tmp_path):
  images = uint8_images((8, 16, 16, 3), seed=4)
  np.save(tmp_path / "images.npy", images)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run(
      [sys.executable, "-c", SHARDED_SNIPPET, str(tmp_path / "images.npy"), str(tmp_path / "out.npy"),
       json.dumps(MAIN)], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  sharded = np.load(tmp_path / "out.npy")
  unsharded = views(images, key=11, **MAIN)
  np.testing.assert_allclose(sharded, unsharded, atol=1e-6)  # same draws; fusion may differ by an ulp

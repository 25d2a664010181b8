"""On-device, jit-able image views for SimCLR/BYOL-style methods.

Everything here is a pure function of (image, key, config): no Python control flow
on traced values, so it runs inside the jitted train step on any backend, under
`jax.vmap`, and on a batch sharded over many devices.

Why it is shaped this way:
- The random resized crop is one `jax.image.scale_and_translate` per image from
  the sampled box: antialiased bilinear, computed as two small matmuls with
  weight matrices rather than per-pixel gathers, which XLA:CPU makes slow. (A
  hand-built interpolation matrix with the flip folded in measured ~25% slower.)
  The gaussian blur is done the same way, as two [side, side] matmuls.
- Colour jitter follows torchvision's ColorJitter (as SimCLR's recipe does):
  multiplicative brightness, contrast blended with the mean grey level,
  saturation blended with the per-pixel grey level, hue shifted in HSV, a clip to
  [0, 1] after each op, and the four ops in a random order per example. The first
  three are affine in the image, so one formula covers them; only hue needs the
  (costly) HSV round trip, which we run once, at its sampled position in the order.
- Ops whose probability is 0 in the config are skipped at trace time, so they cost
  nothing; otherwise a Bernoulli draw selects the result with `jnp.where`.
"""
import math
import numbers

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax.core import validate
from ssl_jax.core.errors import ConfigError

_HIGHEST = jax.lax.Precision.HIGHEST  # the blur matmuls are tiny; keep them exact (float32) on TPU too


def default_view_config(**overrides) -> ml_collections.ConfigDict:
  """SimCLR CIFAR-style view settings (colour strength s=0.5); override any field."""
  config = ml_collections.ConfigDict()
  config.crop_size = 32  # side of the square output view, in pixels
  config.crop_scale = (0.08, 1.0)  # range of the crop's area as a fraction of the image area
  config.crop_ratio = (3 / 4, 4 / 3)  # range of the crop's aspect ratio (width / height), sampled in log space
  config.flip_prob = 0.5  # probability of a horizontal flip
  config.jitter_prob = 0.8  # probability of applying colour jitter (all four ops, in random order)
  config.brightness = 0.4  # brightness factor ~ U[max(0, 1-b), 1+b]; SimCLR strength s gives 0.8*s
  config.contrast = 0.4  # contrast factor ~ U[max(0, 1-c), 1+c]; 0.8*s
  config.saturation = 0.4  # saturation factor ~ U[max(0, 1-s), 1+s]; 0.8*s (no-op for 1 channel)
  config.hue = 0.1  # hue shift ~ U[-h, h] in turns of the colour wheel, h <= 0.5; 0.2*s (no-op for 1 channel)
  config.grayscale_prob = 0.2  # probability of converting to grey (ITU-R 601 luma); no-op for 1 channel
  config.blur_prob = 0.0  # probability of a gaussian blur; BYOL uses 1.0 and 0.1 for its two views
  config.blur_sigma = (0.1, 2.0)  # range of the blur's standard deviation, in pixels
  config.blur_kernel_fraction = 0.1  # blur kernel side as a fraction of crop_size (SimCLR), made odd
  config.solarize_prob = 0.0  # probability of solarizing; BYOL uses 0.0 and 0.2 for its two views
  config.solarize_threshold = 0.5  # pixels at or above this value v become 1 - v
  unknown = sorted(set(overrides) - set(config.keys()) - {"count"})
  if unknown:
    raise ConfigError(validate.unknown_field_message("views.<group>", unknown[0],
                                            list(config.keys()) + ["count"]))
  config.update(overrides)
  return config


# ---------------------------------------------------------------- pure helpers


def to_float(image):
  """uint8 [0, 255] -> float32 [0, 1]; floating images are assumed in [0, 1] already."""
  if jnp.issubdtype(image.dtype, jnp.integer):
    return image.astype(jnp.float32) / 255.0
  return image.astype(jnp.float32)


def grayscale(image):
  """[..., H, W, C] -> grey with C channels kept (ITU-R 601 luma for RGB; identity for C=1)."""
  if image.shape[-1] == 1:
    return image
  # Same weights as dm_pix.rgb_to_grayscale, written as a weighted sum: its tensordot
  # over a size-3 axis becomes a dot that XLA:CPU will not fuse, costing ~3x overall.
  luma = 0.2989 * image[..., 0:1] + 0.5870 * image[..., 1:2] + 0.1140 * image[..., 2:3]
  return jnp.broadcast_to(luma, image.shape)


def adjust_brightness(image, factor):
  """torchvision brightness: scale every pixel by `factor`, then clip."""
  return _affine_color(image, factor, 0.0, 0.0)


def adjust_contrast(image, factor):
  """torchvision contrast: blend with the image's mean grey level, then clip."""
  return _affine_color(image, factor, 0.0, 1.0 - factor)


def adjust_saturation(image, factor):
  """torchvision saturation: blend with the per-pixel grey level, then clip."""
  return _affine_color(image, factor, 1.0 - factor, 0.0)


def _affine_color(image, scale, grey_weight, mean_weight):
  """scale * x + grey_weight * grey(x) + mean_weight * mean(grey(x)), clipped to [0, 1].

  Brightness, contrast and saturation are all this one formula with different
  weights; (1, 0, 0) is the exact identity on [0, 1] images.
  """
  grey = grayscale(image)
  mean = jnp.mean(grey, axis=(-3, -2, -1), keepdims=True)
  return jnp.clip(scale * image + grey_weight * grey + mean_weight * mean, 0.0, 1.0)


def _resample(image, rows, cols):
  """image [H, W, C] -> [rows.shape[0], cols.shape[0], C]: rows @ image @ cols.T per channel."""
  out = jnp.einsum("oh,hwc->owc", rows, image, precision=_HIGHEST)
  return jnp.einsum("pw,owc->opc", cols, out, precision=_HIGHEST)


def _blur_matrix(sigma, size, radius):
  """[size, size] gaussian filter with zero padding ('SAME', as dm-pix/SimCLR)."""
  offsets = jnp.arange(size)[:, None] - jnp.arange(size)[None, :]
  taps = jnp.exp(-jnp.arange(-radius, radius + 1, dtype=jnp.float32) ** 2 / (2.0 * sigma**2))
  taps = taps / jnp.sum(taps)  # normalised before truncation by the border, like dm-pix
  return jnp.where(jnp.abs(offsets) <= radius, taps[jnp.clip(offsets + radius, 0, 2 * radius)], 0.0)


def gaussian_blur(image, sigma, kernel_size):
  """Separable gaussian blur of [H, W, C]; same result as `dm_pix.gaussian_blur`.

  Written as two [H, H] / [W, W] matmuls because a per-example sigma under vmap
  turns dm-pix's depthwise convolution into a slow batched-kernel convolution on CPU.
  """
  radius = int(kernel_size / 2)
  height, width = image.shape[-3], image.shape[-2]
  return _resample(image, _blur_matrix(sigma, height, radius), _blur_matrix(sigma, width, radius))


# ------------------------------------------------------------ random sampling

# All of an example's randomness comes from ONE `jax.random.uniform` call, sliced
# by these names: each threefry call is unrolled into the program, so one call per
# op made the view function take several seconds longer to compile.
_CROP_AREA, _CROP_RATIO = slice(0, 10), slice(10, 20)
_CROP_TOP, _CROP_LEFT, _FLIP, _JITTER, _JITTER_FACTORS, _HUE = 20, 21, 22, 23, slice(24, 27), 27
_JITTER_ORDER, _GRAY, _BLUR_SIGMA, _BLUR, _SOLARIZE = slice(28, 32), 32, 33, 34, 35
_NUM_UNIFORMS = 36


def _between(u, low, high):
  return low + u * (high - low)


def _sample_crop_box(u, height, width, scale, ratio):
  """torchvision RandomResizedCrop box (top, left, h, w) from the example's uniforms.

  Its 10 tries are drawn at once and the first valid one is kept; if none fits,
  fall back to the largest centred crop with an in-range aspect ratio.
  """
  area = height * width * _between(u[_CROP_AREA], scale[0], scale[1])
  aspect = jnp.exp(_between(u[_CROP_RATIO], math.log(ratio[0]), math.log(ratio[1])))
  crop_w = jnp.round(jnp.sqrt(area * aspect))
  crop_h = jnp.round(jnp.sqrt(area / aspect))
  valid = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
  first, found = jnp.argmax(valid), valid.any()  # argmax: index of the first True
  # The fallback is static: it depends only on the image shape and the ratio range.
  if width / height < min(ratio):
    fallback_w, fallback_h = width, round(width / min(ratio))
  elif width / height > max(ratio):
    fallback_w, fallback_h = round(height * max(ratio)), height
  else:
    fallback_w, fallback_h = width, height
  crop_h = jnp.where(found, crop_h[first], fallback_h)
  crop_w = jnp.where(found, crop_w[first], fallback_w)
  top = jnp.where(found, jnp.floor(u[_CROP_TOP] * (height - crop_h + 1)), (height - crop_h) // 2)
  left = jnp.where(found, jnp.floor(u[_CROP_LEFT] * (width - crop_w + 1)), (width - crop_w) // 2)
  return top, left, crop_h, crop_w


def _color_jitter(image, u, config):
  """torchvision ColorJitter with the four ops in a random order (one per example)."""
  low = lambda strength: max(0.0, 1.0 - strength)
  strengths = (config.brightness, config.contrast, config.saturation)
  f_b, f_c, f_s = (_between(u[_JITTER_FACTORS][i], low(s), 1.0 + s) for i, s in enumerate(strengths))
  # Rows: brightness, contrast, saturation, hue; columns: the _affine_color weights.
  # Hue's row is the identity: hue is applied separately, at its place in the order.
  one, zero = jnp.ones(()), jnp.zeros(())
  weights = jnp.stack([jnp.stack([f_b, zero, zero]), jnp.stack([f_c, zero, 1.0 - f_c]),
                       jnp.stack([f_s, 1.0 - f_s, zero]), jnp.stack([one, zero, zero])])
  identity = jnp.array([1.0, 0.0, 0.0])
  order = jnp.argsort(u[_JITTER_ORDER])  # a uniformly random permutation of the 4 ops
  if image.shape[-1] == 1 or config.hue == 0:  # no hue to place: run the order as is
    for op in range(4):
      image = _affine_color(image, *weights[order[op]])
    return image
  hue_position = jnp.argmax(order == 3)
  # Affine ops before the hue shift run in the first pass, the rest in the second;
  # an op outside its pass gets identity weights, which leave [0, 1] images unchanged.
  for op in range(4):
    image = _affine_color(image, *jnp.where(op < hue_position, weights[order[op]], identity))
  image = jnp.clip(dm_pix.adjust_hue(image, _between(u[_HUE], -config.hue, config.hue)), 0.0, 1.0)
  for op in range(4):
    image = _affine_color(image, *jnp.where(op > hue_position, weights[order[op]], identity))
  return image


PROBABILITIES = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")


def check_view_config(view_config: ml_collections.ConfigDict, where: str = "views.<group>") -> None:
  """ConfigError naming the first field of one view config (a view group, or finetune's
  crops) that random_view cannot use; `where` is its place in the config, for the message."""
  size = view_config.crop_size
  if not (isinstance(size, int) and size > 0):
    raise ConfigError(f"{where}.crop_size must be a positive int, got {size!r}.")
  for name in PROBABILITIES:
    if not _in_range(view_config[name], 0.0, 1.0):
      raise ConfigError(f"{where}.{name} must be a probability in [0, 1], got "
                        f"{view_config[name]!r}.")
  if not _in_range(view_config.hue, 0.0, 0.5):
    raise ConfigError(f"{where}.hue must be in [0, 0.5], got {view_config.hue!r}.")


def _in_range(value, low: float, high: float) -> bool:
  """A real number in [low, high] (NaN is not; a string is a ConfigError, not a TypeError)."""
  return isinstance(value, numbers.Real) and low <= value <= high


def _check(image, config):
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"random_view expects one image [H, W, C] with C in (1, 3); got shape {image.shape}.")
  check_view_config(config)


def _maybe(u, prob, op, image):
  """Apply `op` when the uniform `u` < `prob`; decided at trace time when prob is 0 or 1."""
  if prob <= 0.0:
    return image
  if prob >= 1.0:
    return op(image)
  return jnp.where(u < prob, op(image), image)


# ----------------------------------------------------------------- public API


def random_view(image, key, config) -> jax.Array:
  """One random view of ONE image [H, W, C] (uint8, or float in [0, 1]), C in (1, 3).

  Order as in SimCLR/BYOL: resized crop -> flip -> colour jitter -> grayscale ->
  blur -> solarize. Returns float32 [crop_size, crop_size, C] in [0, 1].
  """
  _check(image, config)
  height, width, _ = image.shape
  size = config.crop_size
  u = jax.random.uniform(key, (_NUM_UNIFORMS,))
  image = to_float(image)

  top, left, crop_h, crop_w = _sample_crop_box(u, height, width, config.crop_scale, config.crop_ratio)
  # Output pixel i samples the input at top + (i + 0.5) * crop_h / size - 0.5 (pixel
  # centres, as jax.image.resize), antialiased when the crop is larger than the view.
  scale = jnp.stack([size / crop_h, size / crop_w])
  image = jax.image.scale_and_translate(image, (size, size, image.shape[-1]), (0, 1), scale,
                                        -jnp.stack([top, left]) * scale, "linear")
  image = _maybe(u[_FLIP], config.flip_prob, dm_pix.flip_left_right, jnp.clip(image, 0.0, 1.0))

  image = _maybe(u[_JITTER], config.jitter_prob, lambda x: _color_jitter(x, u, config), image)
  if image.shape[-1] == 3:
    image = _maybe(u[_GRAY], config.grayscale_prob, grayscale, image)
  sigma = _between(u[_BLUR_SIGMA], *config.blur_sigma)
  blur = lambda x: gaussian_blur(x, sigma, config.blur_kernel_fraction * size)
  image = _maybe(u[_BLUR], config.blur_prob, blur, image)
  image = _maybe(u[_SOLARIZE], config.solarize_prob, lambda x: dm_pix.solarize(x, config.solarize_threshold), image)
  return jnp.clip(image, 0.0, 1.0)


def random_views(images, key, config) -> jax.Array:
  """Random views of a batch [B, H, W, C] -> float32 [B, crop_size, crop_size, C].

  Example i uses `jax.random.split(key, B)[i]`, so its view depends only on
  (key, i, image i): the same global batch gives the same views however it is
  sharded across devices.
  """
  if images.ndim != 4:
    raise ValueError(f"random_views expects a batch [B, H, W, C]; got shape {images.shape}.")
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda image, k: random_view(image, k, config))(images, keys)


def center_view(images, size, crop_fraction=1.0) -> jax.Array:
  """Deterministic eval view: centred square crop, bilinear resize to [B, size, size, C].

  The crop keeps `crop_fraction` of the shorter side (1.0 for CIFAR-style eval,
  0.875 for the usual ImageNet 224/256 protocol). Identity (as float in [0, 1])
  when the images are already size x size and crop_fraction is 1.
  """
  if images.ndim != 4:
    raise ValueError(f"center_view expects a batch [B, H, W, C]; got shape {images.shape}.")
  if not 0.0 < crop_fraction <= 1.0:
    raise ConfigError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
  images = to_float(images)
  _, height, width, _ = images.shape
  if height == width == size and crop_fraction == 1.0:
    return images
  side = round(min(height, width) * crop_fraction)
  top, left = round((height - side) / 2), round((width - side) / 2)
  crop = images[:, top:top + side, left:left + side]
  return jnp.clip(jax.image.resize(crop, (crop.shape[0], size, size, crop.shape[-1]), "linear"), 0.0, 1.0)


def normalize(images, mean, std) -> jax.Array:
  """(images - mean) / std with per-channel `mean` and `std` tuples (one value per channel)."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  channels = images.shape[-1]
  if mean.shape not in ((channels,), (1,)) or std.shape not in ((channels,), (1,)):
    raise ValueError(f"normalize needs one mean/std per channel ({channels}); got mean={mean.tolist()}, std={std.tolist()}.")
  return (to_float(images) - mean) / std


def evaluation_images(images: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """uint8 [B,H,W,C] -> normalised float32 at the evaluation resolution, no randomness."""
  images = center_view(images, config.data.image_size)
  return normalize(images, config.data.mean, config.data.std)

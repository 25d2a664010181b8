"""The classic pretext tasks: jigsaw puzzles, the denoising autoencoder, rotation
prediction and colorization, each against numpy, published values or a hand computation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import colorization as colorization_experiment, denoising as denoising_experiment, jigsaw as jigsaw_experiment, rotation as rotation_experiment
from ssl_jax.methods import colorization, denoising, jigsaw, rotation
import jitted


def rand(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def uint8_batch(n=4, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def _init(module, experiment, batch):
  config = experiment.get_config("fashion_mnist,smoke")
  params, state = jitted.init(module, config, {"image": batch})
  return config, params, state


# ----------------------------------------------------------------------------- jigsaw

def test_permutation_set_is_deterministic_max_hamming_from_identity():
  two = jigsaw.permutations(2)
  assert two[0].tolist() == list(range(9))
  # The lexicographically first permutation that moves every tile (distance 9).
  assert two[1].tolist() == [1, 0, 3, 2, 5, 4, 7, 8, 6]
  hundred = jigsaw.permutations(100)
  np.testing.assert_array_equal(hundred[:2], two)
  assert len({tuple(p) for p in hundred}) == 100
  assert all(sorted(p) == list(range(9)) for p in hundred)
  distances = (hundred[:, None] != hundred[None]).sum(-1) + 9 * np.eye(100, dtype=int)
  assert distances.min() >= 6


def _standardize(tile):
  return (tile - tile.mean()) / (tile.std() + 1e-5)


def test_tiles_without_gap_are_the_grid_each_standardised():
  images = rand((2, 9, 9, 1), seed=3)
  tiles = np.asarray(jigsaw.tiles(jnp.asarray(images), jax.random.PRNGKey(0), gap=0))
  assert tiles.shape == (2, 9, 3, 3, 1)
  for b in range(2):
    for r in range(3):
      for c in range(3):
        want = _standardize(images[b, 3 * r:3 * r + 3, 3 * c:3 * c + 3].astype(np.float64))
        np.testing.assert_allclose(tiles[b, 3 * r + c], want, rtol=1e-4, atol=1e-5)


def test_tiles_with_a_gap_come_from_inside_their_cell():
  images = rand((2, 12, 12, 1), seed=4)
  tiles = np.asarray(jigsaw.tiles(jnp.asarray(images), jax.random.PRNGKey(5), gap=1))
  assert tiles.shape == (2, 9, 3, 3, 1)
  for b in range(2):
    for t in range(9):
      r, c = divmod(t, 3)
      candidates = [_standardize(images[b, 4 * r + dy:4 * r + dy + 3, 4 * c + dx:4 * c + dx + 3]
                                 .astype(np.float64)) for dy in (0, 1) for dx in (0, 1)]
      assert any(np.allclose(tiles[b, t], cand, atol=1e-4) for cand in candidates), (b, t)


def test_jigsaw_views_shuffle_by_the_labelled_permutation():
  batch = uint8_batch()
  config = jigsaw_experiment.get_config("fashion_mnist,smoke")
  config.jigsaw.tile_gap = 0  # deterministic tiles, so the unshuffled grid can be rebuilt
  rng = jax.random.PRNGKey(7)
  views = jigsaw.views({"image": jnp.asarray(batch)}, rng, 0, config)  # eager, as the reference
  crop_rng, tile_rng, _ = jax.random.split(rng, 3)
  from ssl_jax.methods.lib import views as views_lib
  (crops,) = views_lib.make(jnp.asarray(batch), crop_rng, config)
  grid = np.asarray(jigsaw.tiles(crops, tile_rng, 0))
  perms = jigsaw.permutations(config.jigsaw.num_permutations)
  shuffled, labels = np.asarray(views["tiles"]), np.asarray(views["labels"])
  for b in range(len(batch)):
    np.testing.assert_array_equal(shuffled[b], grid[b][perms[labels[b]]])


# ----------------------------------------------------------------------------- denoising

def test_corruption_noise_and_salt_and_pepper():
  images = jnp.asarray(rand((8, 16, 16, 1), seed=8))
  np.testing.assert_array_equal(denoising.corrupt(images, jax.random.PRNGKey(0), 0.0, 0.0), images)
  noisy = np.asarray(denoising.corrupt(images, jax.random.PRNGKey(0), 0.7, 0.0))
  assert abs((noisy - np.asarray(images)).std() - 0.7) < 0.03
  salted = np.asarray(denoising.corrupt(images, jax.random.PRNGKey(1), 0.0, 1.0))
  low, high = np.asarray(images).min((1, 2, 3)), np.asarray(images).max((1, 2, 3))
  for b in range(8):
    assert set(np.unique(salted[b])) <= {low[b], high[b]}
  some = np.asarray(denoising.corrupt(images, jax.random.PRNGKey(2), 0.0, 0.25))
  assert abs((some != np.asarray(images)).mean() - 0.25) < 0.03


def test_denoising_loss_by_hand():
  batch = uint8_batch()
  config, params, state = _init(denoising, denoising_experiment, batch)
  out = params["decoder_out"]
  params = {**params, "decoder_out": {"kernel": jnp.zeros_like(out["kernel"]),
                                      "bias": jnp.full_like(out["bias"], 0.25)}}
  views = jitted.views(denoising, {"image": batch}, jax.random.PRNGKey(1), 0, config)
  value, (metrics, _) = denoising.loss(params, state, views, jax.random.PRNGKey(2), 0, config)
  target = np.asarray(views["target"], np.float64)
  np.testing.assert_allclose(float(value), ((0.25 - target) ** 2).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["collapsed_loss"]), target.var(0).mean(), rtol=1e-4)
  with pytest.raises(Exception, match="salt_pepper"):
    config.denoising.salt_pepper = 1.5
    denoising.network(config)


# ----------------------------------------------------------------------------- rotation

def test_rotations_of_a_hand_built_image():
  image = np.array([[1, 2], [3, 4]], np.float32)[None, :, :, None]
  rotated, labels = rotation.rotate_all(jnp.asarray(np.concatenate([image, 10 * image])))
  rotated = np.asarray(rotated)[..., 0]
  # Counter-clockwise quarter turns, each image's four turns together.
  want = [[[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]]]
  for k in range(4):
    np.testing.assert_array_equal(rotated[k], want[k])
    np.testing.assert_array_equal(rotated[4 + k], 10 * np.asarray(want[k]))
  np.testing.assert_array_equal(np.asarray(labels), [0, 1, 2, 3, 0, 1, 2, 3])


def test_rotation_views_label_each_turn_of_the_same_crop():
  batch = uint8_batch(3)
  config, params, state = _init(rotation, rotation_experiment, batch)
  views = jitted.views(rotation, {"image": batch}, jax.random.PRNGKey(1), 0, config)
  images, labels = np.asarray(views["images"]), np.asarray(views["labels"])
  assert images.shape[0] == 12 and labels.tolist() == [0, 1, 2, 3] * 3
  for k in range(4):
    np.testing.assert_array_equal(images[k::4], np.rot90(images[::4], k, axes=(1, 2)))
  # A classifier that scores every rotation alike is at chance: ln 4, as collapsed_loss says.
  head = params["classifier"]
  params = {**params, "classifier": jax.tree.map(jnp.zeros_like, head)}
  value, (metrics, _) = rotation.loss(params, state, views, jax.random.PRNGKey(2), 0, config)
  np.testing.assert_allclose(float(value), np.log(4), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["collapsed_loss"]), np.log(4), rtol=1e-6)


# ----------------------------------------------------------------------------- colorization

def test_lab_conversion_against_published_values():
  # CIE Lab (D65) of the sRGB primaries, white, black and mid grey, as colour tables print them.
  rgb = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0.5, 0.5, 0.5]])
  want = [[100, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86],
          [0, 0, 0], [53.39, 0, 0]]
  np.testing.assert_allclose(colorization.rgb_to_lab(rgb), want, atol=0.01)
  np.testing.assert_allclose(np.asarray(colorization.rgb_to_lab(jnp.asarray(rgb, jnp.float32))),
                             want, atol=0.01)


def test_ab_bins_cover_the_srgb_gamut_on_the_grid():
  centres = colorization.ab_bins(10.0)
  assert np.all(centres % 10 == 0) and [0, 0] in centres.tolist()
  # Zhang et al. count 313 bins that the gamut touches; the nearest-centre bins are among them.
  assert 200 < len(centres) <= 313
  colours = np.random.default_rng(0).uniform(0, 1, (20000, 3))
  nearest = np.round(colorization.rgb_to_lab(colours)[:, 1:] / 10) * 10
  assert {tuple(c) for c in nearest} <= {tuple(c) for c in centres}


def test_soft_encoding_by_hand():
  centres = colorization.ab_bins(10.0)
  weights = np.asarray(colorization.soft_encode(jnp.asarray([[3.0, 4.0]]), centres, 5.0))[0]
  # From (3, 4): (0,0) 25, (0,10) 45, (10,0) 65, (10,10) 85, (-10,0) 185 squared distances.
  nearest = {(0, 0): 25, (0, 10): 45, (10, 0): 65, (10, 10): 85, (-10, 0): 185}
  total = sum(np.exp(-d / 50) for d in nearest.values())
  for (a, b), d in nearest.items():
    index = np.flatnonzero((centres[:, 0] == a) & (centres[:, 1] == b))[0]
    np.testing.assert_allclose(weights[index], np.exp(-d / 50) / total, rtol=1e-5)
  assert np.count_nonzero(weights) == 5


def test_cell_targets_equal_the_dense_soft_encoding():
  rng = np.random.default_rng(4)
  ab = jnp.asarray(colorization.rgb_to_lab(rng.uniform(0, 1, (8, 16, 16, 3)))[..., 1:], jnp.float32)
  dense = np.asarray(colorization.soft_encode(ab, colorization.ab_bins(10.0), 5.0))
  want = dense.reshape(8, 4, 4, 4, 4, -1).mean((2, 4)).reshape(8, 16, -1)
  got = np.asarray(colorization.soft_encode_cells(ab, 10.0, 5.0, 4))
  np.testing.assert_allclose(got, want, atol=1e-6)
  # Pixel by pixel (grid = image side) over the whole sRGB cube: the 25-candidate search
  # finds the 5 nearest bins everywhere but at 1 of these 32^3 colours (the gamut's edge).
  levels = np.linspace(0, 1, 32)
  cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 32, 32, 3)
  ab = jnp.asarray(colorization.rgb_to_lab(cube)[..., 1:], jnp.float32)
  dense = np.asarray(colorization.soft_encode(ab, colorization.ab_bins(10.0), 5.0))
  cells = np.asarray(colorization.soft_encode_cells(ab, 10.0, 5.0, 32))
  differ = np.abs(dense.reshape(-1, dense.shape[-1]) - cells.reshape(-1, cells.shape[-1])).max(-1)
  assert (differ > 1e-5).sum() <= 1


def _colour_config(**overrides):
  config = colorization_experiment.get_config("photo_crops,smoke")
  config.colorization.bin_size = 10.0
  config.update(overrides)
  return config


def test_colorization_targets_and_loss_of_a_solid_colour():
  config = _colour_config()
  red = np.zeros((2, 32, 32, 3), np.uint8)
  red[..., 0] = 255
  params, state = jitted.init(colorization, config, {"image": red})
  views = jitted.views(colorization, {"image": red}, jax.random.PRNGKey(1), 0, config)
  np.testing.assert_allclose(np.asarray(views["lightness"]), (53.24 - 50) / 50, atol=2e-3)
  want = np.asarray(colorization.soft_encode(jnp.asarray([80.09, 67.20]),
                                             colorization.ab_bins(10.0), 5.0))
  cells = config.colorization.grid ** 2
  assert views["targets"].shape == (2, cells, len(want))
  np.testing.assert_allclose(np.asarray(views["targets"]), np.broadcast_to(want, (2, cells, len(want))),
                             atol=2e-3)
  # Logits all 0: the uniform distribution, cross-entropy ln Q against any target.
  out = params["decoder_out"]
  params = {**params, "decoder_out": jax.tree.map(jnp.zeros_like, out)}
  value, (metrics, _) = colorization.loss(params, state, views, jax.random.PRNGKey(2), 0, config)
  np.testing.assert_allclose(float(value), np.log(len(want)), rtol=1e-5)


def test_colorization_encodes_the_lightness_only():
  config = _colour_config()
  images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  params, state = jitted.init(colorization, config, {"image": images})
  features = colorization.encode(params, state, {"image": jnp.asarray(images)}, config)
  lab = colorization.rgb_to_lab(images.astype(np.float64) / 255)
  lightness = np.repeat((lab[..., :1] - 50) / 50, 3, axis=-1).astype(np.float32)
  from ssl_jax import models
  want = models.build(config.model).apply(colorization.backbone(params, state, config),
                                          jnp.asarray(lightness), train=False)
  np.testing.assert_allclose(np.asarray(features), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_colorization_refuses_grey_views_and_grey_datasets():
  config = _colour_config()
  config.views.crops.grayscale_prob = 0.5
  with pytest.raises(Exception, match="grayscale_prob"):
    colorization.views({"image": jnp.zeros((2, 32, 32, 3), jnp.uint8)}, jax.random.PRNGKey(0), 0,
                       config)
  with pytest.raises(Exception, match="grey"):
    colorization_experiment.get_config("fashion_mnist")


def test_photo_crops_splits_are_spatially_disjoint_and_build_as_tfds(tmp_path, monkeypatch):
  from ssl_jax.data import sources
  from ssl_jax.data.builders import photo_crops
  for height, width in ((213, 320), (300, 256)):
    train = photo_crops.crop_corners(height, width, "train", 500, seed=0)
    test = photo_crops.crop_corners(height, width, "test", 500, seed=0)
    assert (train[:, 1] + photo_crops.CROP).max() <= int(0.75 * width) <= test[:, 1].min()
    assert (test[:, 1] + photo_crops.CROP).max() <= width
    assert (np.maximum(train[:, 0], test[:, 0]) + photo_crops.CROP).max() <= height
  monkeypatch.setenv(photo_crops.COUNTS_ENV, "6,2")
  from ssl_jax.data import prepare
  prepare.prepare("photo_crops", str(tmp_path))
  source = sources.get_source("photo_crops", "test", str(tmp_path))
  images, labels = photo_crops.crops("test")
  assert len(source) == 6 and labels.tolist() == [0, 0, 1, 1, 2, 2]
  for i in range(6):
    np.testing.assert_array_equal(source[i]["image"], images[i])
    assert source[i]["label"] == labels[i]
  # The crops are the photographs' own pixels (the flower photo halved with a box filter).
  from PIL import Image
  with Image.open(photo_crops.photo_paths()["flower"]) as photo:
    full = np.asarray(photo.convert("RGB"), np.float64)
  row, column = photo_crops.crop_corners(213, 320, "test", 2, seed=1)[0]
  box = full[2 * row:2 * row + 64, 2 * column:2 * column + 64].reshape(32, 2, 32, 2, 3).mean((1, 3))
  np.testing.assert_allclose(images[2].astype(np.float64), box, atol=1.01)

"""The classic pretext tasks: jigsaw puzzles and the denoising autoencoder, each against
numpy or a hand computation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import denoising as denoising_experiment
from experiments import jigsaw as jigsaw_experiment
from ssl_jax.methods import denoising, jigsaw


def rand(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def uint8_batch(n=4, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def _init(module, experiment, batch):
  config = experiment.get_config("fashion_mnist,smoke")
  params, state = module.init(jax.random.PRNGKey(0), config, {"image": batch})
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
  views = jigsaw.views({"image": jnp.asarray(batch)}, rng, 0, config)
  crop_rng, tile_rng, _ = jax.random.split(rng, 3)
  from ssl_jax import views as views_lib
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
  views = denoising.views({"image": jnp.asarray(batch)}, jax.random.PRNGKey(1), 0, config)
  value, (metrics, _) = denoising.loss(params, state, views, jax.random.PRNGKey(2), 0, config)
  target = np.asarray(views["target"], np.float64)
  np.testing.assert_allclose(float(value), ((0.25 - target) ** 2).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["collapsed_loss"]), target.var(0).mean(), rtol=1e-4)
  with pytest.raises(Exception, match="salt_pepper"):
    config.denoising.salt_pepper = 1.5
    denoising.network(config)

"""Frame-order prediction (ssl_jax/methods/frame_order.py) and the video modality it reads:
the classes by hand, the sampled tuples read back from frames that carry their own time
index, the loss against a float64 numpy reference of the pairwise head, and the video
features of the probes (frame encoder and pixels, both averaged over the frames)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import frame_order as experiment
from ssl_jax import models
from ssl_jax.core import errors
from ssl_jax.data import augment, modality
from ssl_jax.methods import frame_order


def small_config():
  return experiment.get_config("moving_fashion_mnist,smoke")


def test_the_classes_are_each_sequence_with_its_reverse():
  assert frame_order.orders(3).tolist() == [[0, 1, 2], [0, 2, 1], [1, 0, 2]]  # by hand
  four = frame_order.orders(4)
  assert four.shape == (12, 4) and frame_order.num_classes(4) == 12
  both = [tuple(p) for p in four] + [tuple(p[::-1]) for p in four]
  assert sorted(both) == list(itertools.permutations(range(4)))  # each permutation once


def numbered_videos(batch, frames, size=4):
  """uint8 [batch, frames, size, size, 1] whose frame t is filled with the value t."""
  return np.broadcast_to(np.arange(frames, dtype=np.uint8)[None, :, None, None, None],
                         (batch, frames, size, size, 1)).copy()


def test_a_tuple_is_a_time_ordered_subset_shown_in_its_class_order():
  batch, total, length = 4000, 8, 4
  frames, labels, shown = jax.jit(frame_order.shuffled_frames, static_argnums=2)(
      numbered_videos(batch, total), jax.random.PRNGKey(3), length)
  frames, labels, shown = map(np.asarray, (frames, labels, shown))
  # Each shown frame is the frame of the time index `shown` says.
  np.testing.assert_array_equal(frames[:, :, 0, 0, 0], shown)
  classes = frame_order.orders(length)
  forward = 0
  for row, label in zip(shown, labels):
    chosen = np.sort(row)
    assert len(set(row)) == length  # distinct frames
    rank = np.searchsorted(chosen, row)  # position j shows the rank[j]-th chosen frame
    assert rank.tolist() in (classes[label].tolist(), classes[label][::-1].tolist())
    forward += rank[0] < rank[-1]
  # Balance: 12 classes, two directions, every frame index chosen with probability 4/8.
  # Bounds are 5 binomial standard deviations.
  counts = np.bincount(labels, minlength=12)
  expected = batch / 12
  assert np.abs(counts - expected).max() < 5 * np.sqrt(expected * (1 - 1 / 12))
  assert abs(forward - batch / 2) < 5 * np.sqrt(batch / 4)
  picked = np.bincount(shown.ravel(), minlength=total) / batch
  assert np.abs(picked - length / total).max() < 5 * np.sqrt(0.25 / batch)


def test_one_view_is_shared_by_the_frames_of_a_tuple():
  config = small_config()
  (settings,) = config.views.values()
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 4, 48, 48, 1), dtype=np.uint8)
  key = jax.random.PRNGKey(5)
  got = np.asarray(frame_order.shared_views(jnp.asarray(frames), key, settings))
  keys = jax.random.split(key, 3)
  for b in range(3):
    for t in range(4):  # the reference: one random_view per frame with its tuple's key
      want = np.asarray(augment.random_view(jnp.asarray(frames[b, t]), keys[b], settings))
      np.testing.assert_allclose(got[b, t], want, atol=1e-6)
  same = np.repeat(frames[:, :1], 4, axis=1)  # identical frames stay identical
  views = np.asarray(frame_order.shared_views(jnp.asarray(same), key, settings))
  np.testing.assert_array_equal(views, np.repeat(views[:, :1], 4, axis=1))


def test_the_loss_matches_a_float64_reference_of_the_pairwise_head():
  config = small_config()
  example = {"video": np.zeros((1, 8, 48, 48, 1), np.uint8)}
  params, state = frame_order.init(jax.random.PRNGKey(0), config, example)
  rng = np.random.default_rng(1)
  size = next(iter(config.views.values())).crop_size
  views = {"frames": jnp.asarray(rng.normal(size=(6, 4, size, size, 1)), jnp.float32),
           "labels": jnp.asarray(rng.integers(0, 12, 6), jnp.int32)}
  value, (metrics, _) = frame_order.loss(params, state, views, None, 0, config, train=False)
  # The reference: the backbone's frame features (the shared part), then the paper's head
  # in float64 numpy: a shared ReLU layer on each pair's concatenated features (i < j),
  # a linear classifier on all pairs, softmax cross-entropy.
  features = models.build(config.model).apply(
      frame_order.backbone(params, state, config), views["frames"].reshape(24, size, size, 1),
      train=False)
  f = np.asarray(features, np.float64).reshape(6, 4, -1)
  pair_w, pair_b = (np.asarray(params["pair"][k], np.float64) for k in ("kernel", "bias"))
  out_w, out_b = (np.asarray(params["classifier"][k], np.float64) for k in ("kernel", "bias"))
  hidden = np.concatenate([np.maximum(np.concatenate([f[:, i], f[:, j]], -1) @ pair_w + pair_b, 0)
                           for i, j in itertools.combinations(range(4), 2)], -1)
  logits = hidden @ out_w + out_b
  log_probs = logits - logits.max(1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
  labels = np.asarray(views["labels"])
  want = -log_probs[np.arange(6), labels].mean()
  np.testing.assert_allclose(float(value), want, rtol=1e-4)
  assert float(metrics["frame_order_top1"]) == np.mean(logits.argmax(1) == labels)
  np.testing.assert_allclose(float(metrics["collapsed_loss"]), np.log(12), rtol=1e-6)


def test_a_video_is_scored_by_its_frames_averaged():
  config = small_config()
  rng = np.random.default_rng(2)
  videos = rng.integers(0, 256, (3, 8, 48, 48, 1), dtype=np.uint8)
  # Pixels: (x / 255 - mean) / std of each frame, flattened, averaged over the 8 frames.
  want = ((videos / 255.0 - config.data.mean[0]) / config.data.std[0]).reshape(3, 8, -1).mean(1)
  got = modality.raw_features({"video": jnp.asarray(videos)}, config)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
  # The frame encoder: each frame encoded on its own, then averaged.
  variables = models.random_variables(config, {"video": videos}, seed=0)
  per_frame = np.stack([np.asarray(models.encode_images(variables, jnp.asarray(videos[:, t]),
                                                        config)) for t in range(8)], axis=1)
  encoded = models.encode(variables, {"video": jnp.asarray(videos)}, config)
  np.testing.assert_allclose(np.asarray(encoded), per_frame.mean(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, words", [
    (lambda c: setattr(c.data, "frames", 3), "tuple_length=4 exceeds the 3 frames"),
    (lambda c: setattr(c.frame_order, "tuple_length", 2), "frame_order.tuple_length=2"),
    (lambda c: setattr(c.frame_order, "pair_dim", 0), "frame_order.pair_dim"),
    (lambda c: setattr(c.views.tuples, "count", 2), "one view group with count=1"),
    (lambda c: setattr(c.data, "modality", "image"), "frame_order reads videos"),
])
def test_a_bad_config_is_refused_in_one_line(change, words):
  config = small_config()
  change(config)
  with pytest.raises(errors.ConfigError) as raised:
    frame_order.check_config(config)
  assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_video_dataset_is_not_fine_tuned():
  from ssl_jax.evals import finetune
  config = small_config()
  with pytest.raises(errors.ConfigError, match="linear and kNN probes"):
    finetune.Recipe({}, run_config=config, mesh=None, num_classes=10,
                    config=config.eval.finetune)

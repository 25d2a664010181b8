"""CLIP: the symmetric InfoNCE against numpy, the clipped learned temperature, the
offline captions, and the zero-shot evaluator's wiring by hand."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import clip as clip_experiment
from ssl_jax.core import parallel
from ssl_jax.data.builders import fashion_mnist_captions
from ssl_jax.evals import zeroshot
from ssl_jax.methods import clip
from ssl_jax.methods.lib import losses
import jitted


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_clip_loss_against_numpy():
  rng = np.random.default_rng(0)
  images, texts = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
  value, logits = losses.clip_loss(jnp.asarray(images, jnp.float32), jnp.asarray(texts, jnp.float32),
                                   jnp.float32(3.0))
  # The paper's Figure 3: normalise, scale the cosine matrix, cross-entropy both ways.
  i = images / np.linalg.norm(images, axis=1, keepdims=True)
  t = texts / np.linalg.norm(texts, axis=1, keepdims=True)
  want_logits = 3.0 * i @ t.T
  want = (-np.diag(_log_softmax(want_logits)).mean() - np.diag(_log_softmax(want_logits.T)).mean()) / 2
  np.testing.assert_allclose(np.asarray(logits), want_logits, rtol=1e-5)
  np.testing.assert_allclose(float(value), want, rtol=1e-5)


def test_temperature_starts_at_0_07_and_is_clipped_at_100():
  config = clip_experiment.get_config("fashion_mnist_captions,smoke")
  batch = {"image": np.zeros((4, 28, 28, 1), np.uint8),
           "tokens": np.tile(np.array([[2, 10, 11, 3] + [0] * 12], np.int32), (4, 1))}
  batch["image"][1:, :5] = 200
  batch["tokens"][1:, 2] = 12
  params, state = jitted.init(clip, config, batch)
  views = jitted.views(clip, batch, jax.random.PRNGKey(1), 0, config)
  loss = lambda p: clip.loss(p, state, views, jax.random.PRNGKey(2), 0, config, train=False)
  loss_and_grads = jax.jit(jax.value_and_grad(loss, has_aux=True))  # one compile for both
  (_, (metrics, _)), grads = loss_and_grads(params)
  np.testing.assert_allclose(float(metrics["logit_scale"]), 1 / 0.07, rtol=1e-5)
  assert float(grads["logit_scale"]) != 0.0
  clipped = {**params, "logit_scale": jnp.float32(np.log(1000.0))}
  (_, (metrics, _)), grads = loss_and_grads(clipped)
  np.testing.assert_allclose(float(metrics["logit_scale"]), 100.0, rtol=1e-5)
  assert float(grads["logit_scale"]) == 0.0


def test_captions_follow_their_templates():
  assert fashion_mnist_captions.caption(0, 7) == "a small grey picture of a sneaker"
  assert fashion_mnist_captions.caption(7, 1) == "a pair of pants on a black background"
  assert fashion_mnist_captions.caption(6 * 2 + 2, 9) == "this is a short boot"
  words = fashion_mnist_captions.ZERO_SHOT_TEMPLATE.replace("{}", "").replace(".", "").strip()
  assert not any(words in template for template in fashion_mnist_captions.TEMPLATES)


def test_zeroshot_assigns_the_nearest_prompt(tiny_data_dir):
  """A stand-in method whose image embedding is the one-hot label and whose text
  embedding is the one-hot prompt index scores 1.0; with the prompts rolled by one, 0."""
  config = clip_experiment.get_config("fashion_mnist_captions,smoke")
  config.data.data_dir = tiny_data_dir
  config.eval.test_split = "test[:64]"

  def fake(shift):
    return types.SimpleNamespace(
        encode=lambda p, s, batch, c: {"joint": jax.nn.one_hot(batch["label"], 10)},
        encode_text=lambda p, s, tokens, c: jnp.roll(jnp.eye(10)[:tokens.shape[0]], shift, axis=1))
  mesh = parallel.make_mesh()
  settings = ml_collections.ConfigDict(config.eval.zeroshot.to_dict())
  for shift, want in ((0, 1.0), (1, 0.0)):
    results = zeroshot.evaluate_state({"pretrained": (None, None)}, method=fake(shift),
                                      run_config=config, mesh=mesh, config=settings,
                                      log=lambda *_: None)
    assert results["pretrained"]["top1"] == want and results["chance"]["top1"] == pytest.approx(0.1)
  tokens = zeroshot.prompt_tokens(config, settings)
  assert tokens.shape == (10, config.data.max_length) and (tokens[:, 0] == 2).all()

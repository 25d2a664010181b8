"""ViT (patches, sin-cos positions, a pre-norm block against float64 numpy) and MAE
(masking, the encoder never seeing hidden patches, the loss against float64 numpy)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import mae as mae_experiment
from ssl_jax.core import errors
from ssl_jax.methods import mae
from ssl_jax.models import resnet, vit
from ssl_jax.training import optim


def rand(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_patchify_is_row_major_patches_and_unpatchify_inverts_it():
  images = rand((2, 8, 12, 3))
  patches = np.asarray(vit.patchify(jnp.asarray(images), 4))
  assert patches.shape == (2, 6, 48)
  for b in range(2):
    for r in range(2):
      for c in range(3):
        want = images[b, 4 * r:4 * r + 4, 4 * c:4 * c + 4, :].reshape(-1)
        np.testing.assert_array_equal(patches[b, r * 3 + c], want)
  square = rand((2, 8, 8, 3))
  np.testing.assert_array_equal(vit.unpatchify(vit.patchify(jnp.asarray(square), 4), 4, 3), square)


def test_sincos_2d_by_hand():
  dim, rows, cols = 8, 2, 3
  table = vit.sincos_2d(dim, rows, cols)
  quarter = dim // 4
  for r in range(rows):
    for c in range(cols):
      want = []
      for position in (c, r):  # the first half encodes the column, the second the row
        freqs = [1 / 10000 ** (i / quarter) for i in range(quarter)]
        want += [math.sin(position * f) for f in freqs] + [math.cos(position * f) for f in freqs]
      np.testing.assert_allclose(table[r * cols + c], want, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="divisible by 4"):
    vit.sincos_2d(6, 2, 2)


def _layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def test_block_is_prenorm_attention_then_mlp_in_float64():
  block = vit.Block(num_heads=2)
  x = rand((2, 5, 8), seed=1)
  params = block.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)["params"]
  # Non-trivial norm parameters, so a wrong placement of the norms shows.
  params = jax.tree.map(lambda p: p + 0.1 * rand(p.shape, seed=2), params)
  got = np.asarray(block.apply({"params": params}, jnp.asarray(x), train=False))

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x64 = x.astype(np.float64)
  att = p["attention"]
  h = _layer_norm(x64, p["norm1"]["scale"], p["norm1"]["bias"])
  q, k, v = (np.einsum("bld,dhk->blhk", h, att[n]["kernel"]) + att[n]["bias"]
             for n in ("query", "key", "value"))
  logits = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  heads = np.einsum("bhqs,bshk->bqhk", weights, v)
  y = x64 + np.einsum("bqhk,hkd->bqd", heads, att["out"]["kernel"]) + att["out"]["bias"]
  h = _layer_norm(y, p["norm2"]["scale"], p["norm2"]["bias"])
  h = _gelu(h @ p["mlp_in"]["kernel"] + p["mlp_in"]["bias"])
  want = y + h @ p["mlp_out"]["kernel"] + p["mlp_out"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def tiny_vit(**fields):
  config = vit.default_config("Ti", patch_size=4, width=16, depth=2, num_heads=2, **fields)
  return vit.build(config)


def test_vit_features_any_grid_and_pools():
  model = tiny_vit()
  assert model.feature_dim == 16
  images = jnp.asarray(rand((3, 28, 28, 1)))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  assert model.apply(variables, images, train=False).shape == (3, 16)
  assert model.apply(variables, images[:, :24, :24], train=False).shape == (3, 16)  # 6x6 grid
  hidden = model.apply(variables, model.apply(variables, images, method=vit.ViT.embed), False,
                       method=vit.ViT.transform)
  assert hidden.shape == (3, 50, 16)
  np.testing.assert_allclose(model.apply(variables, images, train=False), hidden[:, 0], atol=1e-6)
  gap = tiny_vit(pool="gap")
  np.testing.assert_allclose(gap.apply(variables, images, train=False),
                             hidden[:, 1:].mean(1), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="whole number of 4-pixel patches"):
    model.apply(variables, images[:, :26, :26], train=False)
  with pytest.raises(errors.ConfigError, match="config.model has no field 'widht'"):
    vit.default_config("S", 16, widht=3)


def test_drop_path_only_in_training():
  model = tiny_vit(drop_path_rate=0.5)
  images = jnp.asarray(rand((8, 8, 8, 1)))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  train = lambda seed: model.apply(variables, images, train=True,
                                   rngs={"dropout": jax.random.PRNGKey(seed)})
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(model.apply(variables, images, train=False),
                                tiny_vit().apply(variables, images, train=False))


# ----------------------------------------------------------------------------- MAE

def test_random_masking_keeps_the_lowest_noise_and_restores_order():
  noise = jnp.asarray(np.random.default_rng(3).uniform(size=(4, 10)), jnp.float32)
  visible, restore, mask = map(np.asarray, mae.random_masking(noise, keep=3))
  for b in range(4):
    assert set(visible[b]) == set(np.argsort(np.asarray(noise[b]))[:3])
    assert mask[b].sum() == 7 and set(np.flatnonzero(mask[b] == 0)) == set(visible[b])
    hidden = [i for i in np.argsort(np.asarray(noise[b])) if i not in visible[b]]
    shuffled = np.concatenate([visible[b], hidden])  # tokens labelled by their patch index
    np.testing.assert_array_equal(shuffled[restore[b]], np.arange(10))
  assert mae.kept_patches(49, 0.75) == 12 and mae.kept_patches(196, 0.75) == 49


def test_reconstruction_loss_against_float64_numpy():
  images = rand((2, 8, 8, 1), seed=4)
  predicted = rand((2, 4, 16), seed=5)
  mask = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], np.float32)
  target = np.stack([images[:, r:r + 4, c:c + 4, 0].reshape(2, 16).astype(np.float64)
                     for r in (0, 4) for c in (0, 4)], axis=1)
  for norm_pix in (False, True):
    t = target
    if norm_pix:
      t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
    per_patch = ((predicted - t) ** 2).mean(-1)
    want = (per_patch * mask).sum() / mask.sum()
    got = mae.reconstruction_loss(jnp.asarray(predicted), jnp.asarray(images), jnp.asarray(mask),
                                  4, norm_pix)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_mae():
  config = mae_experiment.get_config("fashion_mnist,smoke")
  network = mae.network(config)
  images = jnp.asarray(rand((2, 28, 28, 1), seed=6))
  noise = jnp.asarray(np.random.default_rng(7).uniform(size=(2, 49)), jnp.float32)
  params = network.init(jax.random.PRNGKey(0), images, noise, 12, train=False)["params"]
  return config, network, params, images, noise


def test_encoder_never_sees_hidden_patches(tiny_mae):
  config, network, params, images, noise = tiny_mae
  forward = jax.jit(lambda x: network.apply({"params": params}, x, noise, 12, train=False))
  predicted, mask = forward(images)
  assert predicted.shape == (2, 49, 16) and np.asarray(mask).sum(1).tolist() == [37, 37]
  hidden = np.asarray(vit.unpatchify(jnp.asarray(mask)[..., None].repeat(16, -1), 4, 1))
  changed = np.asarray(images) + 5.0 * hidden  # every hidden pixel moves, no visible one does
  np.testing.assert_array_equal(forward(jnp.asarray(changed))[0], predicted)
  visible_change = np.asarray(images) + 5.0 * (1 - hidden)
  assert not np.allclose(forward(jnp.asarray(visible_change))[0], predicted)


def test_class_and_mask_tokens_get_no_weight_decay(tiny_mae):
  config, _, params, _, _ = tiny_mae
  labels = mae.param_labels(params, config)
  assert labels["mask_token"] == "no_decay" and labels["encoder"]["class_token"] == "no_decay"
  others = [l for p, l in jax.tree_util.tree_leaves_with_path(labels)
            if p[-1].key not in ("mask_token", "class_token")]
  assert others and set(others) == {"default"}
  # Through the optimizer: AdamW with lr 0 leaves only weight decay, which must spare them.
  tx, _ = optim.make_optimizer(optim.default_config(name="adamw", learning_rate=1e-9,
                                                    weight_decay=1e8),
                               10, 256, lambda p: mae.param_labels(p, config))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  assert float(jnp.abs(updates["mask_token"]).max()) == 0.0
  assert float(jnp.abs(updates["encoder"]["patch_embed"]["kernel"]).max()) > 0.0


def test_mae_needs_a_vit():
  config = mae_experiment.get_config("fashion_mnist,smoke")
  config.model = resnet.default_config(10)
  with pytest.raises(errors.ConfigError, match="MAE needs a ViT encoder"):
    mae.network(config)

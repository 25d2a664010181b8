"""The text objectives and their Transformer: BERT's masking statistics, the MLM and
next-token losses against numpy, the causal and padding masks, and the bag-of-words
baseline by hand."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import clm as clm_experiment, mlm as mlm_experiment
from ssl_jax.data import modality, text
from ssl_jax.methods import clm, mlm
from ssl_jax.models import transformer
import jitted

VOCAB = 50


def _tokens(batch=4, length=12, seed=0, pad_from=9):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, VOCAB, (batch, length)).astype(np.int32)
  tokens[:, 0], tokens[:, pad_from - 1], tokens[:, pad_from:] = text.CLS, text.SEP, text.PAD
  return tokens


def _small(experiment, causal):
  config = experiment.get_config("fortunes,smoke")
  config.model.vocab_size = config.data.vocab_size = VOCAB
  config.model.max_length = config.data.max_length = 16
  config.model.dropout_rate = 0.0
  assert config.model.causal == causal
  return config


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_bert_masking_statistics_over_many_draws():
  tokens = np.tile(_tokens(batch=64, length=64, pad_from=50), (4, 1))
  inputs, chosen = jax.jit(lambda t, k: text.mask_tokens(t, k, VOCAB))(tokens, jax.random.PRNGKey(0))
  inputs, chosen = np.asarray(inputs), np.asarray(chosen)
  ordinary = tokens >= len(text.SPECIAL_TOKENS)
  assert not chosen[~ordinary].any()                     # [CLS], [SEP], [PAD] never chosen
  np.testing.assert_array_equal(inputs[~chosen], tokens[~chosen])  # the rest untouched
  n = chosen.sum()                                       # of ~12.5k ordinary tokens
  assert abs(n / ordinary.sum() - 0.15) < 0.01
  masked = inputs[chosen] == text.MASK
  kept = inputs[chosen] == tokens[chosen]
  replaced = ~masked & ~kept
  assert abs(masked.mean() - 0.8) < 0.03 and abs(replaced.mean() - 0.1) < 0.02
  # A random replacement can equal the original by chance (1 in 45 here): "kept" is 10%
  # plus that share of the random 10%.
  assert abs(kept.mean() - (0.1 + 0.1 / (VOCAB - 5))) < 0.02
  assert (inputs[chosen][replaced] >= 5).all() and (inputs[chosen][replaced] < VOCAB).all()
  # Every row draws its own positions.
  assert len({tuple(np.flatnonzero(r)) for r in chosen}) > 200


def test_mlm_loss_counts_chosen_positions_only():
  config = _small(mlm_experiment, causal=False)
  tokens = _tokens()
  params, state = jitted.init(mlm, config, {"tokens": tokens})
  views = jitted.views(mlm, {"tokens": tokens}, jax.random.PRNGKey(1), 0, config)
  value, (metrics, _) = mlm.loss(params, state, views, jax.random.PRNGKey(2), 0, config, train=False)
  logits = np.asarray(mlm.network(config).apply({"params": params}, views["inputs"], train=False),
                      np.float64)
  chosen = np.asarray(views["chosen"])
  assert chosen.any()
  log_p = _log_softmax(logits)
  picked = np.take_along_axis(log_p, tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(value), -picked[chosen].mean(), rtol=1e-5)
  # Another target at a position that was not chosen changes nothing.
  other = dict(views, targets=views["targets"].at[~views["chosen"]].set(7))
  np.testing.assert_array_equal(float(mlm.loss(params, state, other, jax.random.PRNGKey(2), 0,
                                               config, train=False)[0]), float(value))
  accuracy = (logits.argmax(-1) == tokens)[chosen].mean()
  np.testing.assert_allclose(float(metrics["mlm_accuracy"]), accuracy, rtol=1e-6)


def test_next_token_loss_against_numpy_and_the_causal_mask():
  config = _small(clm_experiment, causal=True)
  tokens = _tokens()
  params, state = jitted.init(clm, config, {"tokens": tokens})
  value, (metrics, _) = clm.loss(params, state, {"tokens": jnp.asarray(tokens)},
                                 jax.random.PRNGKey(2), 0, config, train=False)
  model = clm.network(config)
  variables = {"params": params["backbone"]}
  logits = lambda t: np.asarray(model.apply(variables, model.apply(variables, jnp.asarray(t), False,
                                                                  method=model.hidden),
                                            method=model.logits), np.float64)
  full = logits(tokens)
  log_p = _log_softmax(full[:, :-1])
  targets = tokens[:, 1:]
  picked = np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  want = -picked[targets != text.PAD].mean()
  np.testing.assert_allclose(float(value), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["perplexity"]), np.exp(want), rtol=1e-5)
  # Changing token 5 leaves the logits at positions 0-4 bitwise unchanged, not after.
  changed = tokens.copy()
  changed[:, 5] = (changed[:, 5] + 1 - 5) % (VOCAB - 5) + 5
  after = logits(changed)
  np.testing.assert_array_equal(after[:, :5], full[:, :5])
  assert np.abs(after[:, 5:] - full[:, 5:]).max() > 1e-4


def test_padding_is_invisible_to_the_encoder():
  config = _small(mlm_experiment, causal=False)
  model = transformer.build(config.model)
  short = _tokens(length=12, pad_from=9)
  longer = np.concatenate([short, np.zeros((4, 4), np.int32)], axis=1)  # 4 more [PAD]
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(longer), train=False)
  a = model.apply(variables, jnp.asarray(short), train=False)
  b = model.apply(variables, jnp.asarray(longer), train=False)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  mask = np.asarray(transformer.attention_mask(jnp.asarray(short), causal=True))
  assert mask.shape == (4, 1, 12, 12)
  np.testing.assert_array_equal(mask[0, 0], np.tril(np.ones((12, 12), bool)) & (short[0] != 0)[None])


def test_bag_of_words_baseline_by_hand():
  config = ml_collections.ConfigDict(dict(data=dict(modality="text", vocab_size=8)))
  tokens = np.array([[2, 5, 5, 7, 3, 0], [2, 6, 3, 0, 0, 0]], np.int32)
  got = np.asarray(modality.raw_features({"tokens": jnp.asarray(tokens)}, config))
  first = np.zeros(8)
  first[5], first[7] = np.log(3), np.log(2)
  second = np.zeros(8)
  second[6] = np.log(2)
  np.testing.assert_allclose(got, [first / np.linalg.norm(first), second / np.linalg.norm(second)],
                             rtol=1e-6)

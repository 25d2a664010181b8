"""The text objectives and their Transformer: BERT's masking statistics, the MLM and
next-token losses against numpy, the causal and padding masks, the bag-of-words baseline
by hand; packed texts computed as they are alone, token types, and MLM + NSP/SOP (pooler,
classifier, joint loss) against numpy."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import clm as clm_experiment, mlm as mlm_experiment
from ssl_jax.core.errors import ConfigError
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
  slots = 12
  inputs, positions, weights = (np.asarray(x) for x in jax.jit(
      lambda t, k: text.mask_tokens(t, k, VOCAB, max_predictions=slots))(tokens, jax.random.PRNGKey(0)))
  assert positions.shape == weights.shape == (256, slots)
  ordinary = tokens >= len(text.SPECIAL_TOKENS)
  # BERT's count per sequence: round(15% of its 48 ordinary tokens) = 7, in distinct slots.
  np.testing.assert_array_equal(weights.sum(1), round(0.15 * 48))
  chosen = np.zeros_like(ordinary)
  np.put_along_axis(chosen, positions, weights, axis=1)
  assert (chosen.sum(1) == 7).all() and not chosen[~ordinary].any()  # specials never chosen
  np.testing.assert_array_equal(inputs[~chosen], tokens[~chosen])  # the rest untouched
  # Chosen uniformly: every ordinary position about equally often (1,792 draws over 48).
  per_position = chosen[:, ordinary[0]].sum(0)
  assert per_position.min() > 0.5 * per_position.mean() and per_position.max() < 1.5 * per_position.mean()
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
  # The slots cap the count; a sequence without ordinary tokens has none chosen.
  capped = np.asarray(text.mask_tokens(tokens[:4], jax.random.PRNGKey(1), VOCAB, max_predictions=3)[2])
  np.testing.assert_array_equal(capped.sum(1), 3)
  empty = np.zeros((1, 8), np.int32)
  empty[0, :2] = text.CLS, text.SEP
  assert not np.asarray(text.mask_tokens(empty, jax.random.PRNGKey(1), VOCAB, max_predictions=2)[2]).any()
  assert text.default_max_predictions(128, 0.15) == 20 and text.default_max_predictions(512, 0.15) == 77


def test_mlm_loss_counts_chosen_positions_only():
  config = _small(mlm_experiment, causal=False)
  tokens = _tokens()
  params, state = jitted.init(mlm, config, {"tokens": tokens})
  views = jitted.views(mlm, {"tokens": tokens}, jax.random.PRNGKey(1), 0, config)
  value, (metrics, _) = mlm.loss(params, state, views, jax.random.PRNGKey(2), 0, config, train=False)
  # The reference: logits at every position, as BertForMaskedLM computes them.
  logits = np.asarray(mlm.network(config).apply({"params": params}, views["inputs"], train=False),
                      np.float64)
  chosen = np.zeros(tokens.shape, bool)
  np.put_along_axis(chosen, np.asarray(views["predict_at"]), np.asarray(views["weights"]), axis=1)
  assert chosen.any() and (chosen.sum(1) == round(0.15 * 7)).all()  # 7 ordinary tokens a row
  log_p = _log_softmax(logits)
  picked = np.take_along_axis(log_p, tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(value), -picked[chosen].mean(), rtol=1e-5)
  # Another token at a position that was not chosen (and is not an input) changes nothing.
  other = dict(views, tokens=views["tokens"].at[~chosen].set(7))
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


def _packed(texts, length):
  """Texts (lists of token ids with [CLS]/[SEP]) packed into one row of `length`, with
  segments (1, 2, ...) and positions restarting per text, as ssl_jax/data/sequences.py."""
  tokens, segments, positions = (np.zeros((1, length), np.int32) for _ in range(3))
  cursor = 0
  for number, piece in enumerate(texts, start=1):
    tokens[0, cursor:cursor + len(piece)] = piece
    segments[0, cursor:cursor + len(piece)] = number
    positions[0, cursor:cursor + len(piece)] = np.arange(len(piece))
    cursor += len(piece)
  return tokens, segments, positions


def test_a_packed_text_is_computed_as_it_is_alone():
  config = _small(mlm_experiment, causal=False)
  model = transformer.build(config.model)
  rng = np.random.default_rng(1)
  texts = [[text.CLS, *rng.integers(5, VOCAB, n), text.SEP] for n in (3, 2, 4)]  # 15 tokens
  tokens, segments, positions = _packed(texts, 16)
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(tokens), train=False)
  hidden = lambda t, **kw: np.asarray(model.apply(variables, jnp.asarray(t), False,
                                                  method=model.hidden, **kw))
  packed = hidden(tokens, segments=jnp.asarray(segments), positions=jnp.asarray(positions))
  cursor = 0
  for piece in texts:
    alone = np.zeros((1, 16), np.int32)
    alone[0, :len(piece)] = piece
    np.testing.assert_allclose(packed[0, cursor:cursor + len(piece)], hidden(alone)[0, :len(piece)],
                               rtol=1e-5, atol=1e-5)
    cursor += len(piece)
  # Across texts (no segments, positions running on), the first text sees the others.
  across = hidden(tokens)
  assert np.abs(across[0, :5] - packed[0, :5]).max() > 1e-3


def test_token_types_are_bert_segments():
  config = _small(mlm_experiment, causal=False)
  config.model.type_vocab_size = 2
  model = transformer.build(config.model)
  tokens = _tokens()
  types = np.zeros_like(tokens)
  types[:, 4:9] = 1  # segment B
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(tokens), train=False)
  hidden = lambda **kw: np.asarray(model.apply(variables, jnp.asarray(tokens), False,
                                               method=model.hidden, **kw))
  np.testing.assert_array_equal(hidden(token_types=jnp.zeros_like(tokens)), hidden())
  table = np.asarray(variables["params"]["type_embed"]["embedding"])
  # The embedding sum, before the embedding LayerNorm, differs by table[1] - table[0] in B.
  embed = lambda t: np.asarray(model.apply(
      variables, jnp.asarray(tokens), method=lambda m, x: m.type_embed(jnp.asarray(t))))
  np.testing.assert_allclose(embed(types)[:, 4:9] - embed(np.zeros_like(types))[:, 4:9],
                             np.broadcast_to(table[1] - table[0], (4, 5, table.shape[1])), rtol=1e-6)
  assert np.abs(hidden(token_types=jnp.asarray(types)) - hidden()).max() > 1e-3
  plain = _small(mlm_experiment, causal=False)
  with pytest.raises(ConfigError, match="type_vocab_size"):
    transformer.build(plain.model).apply(
        transformer.build(plain.model).init(jax.random.PRNGKey(0), jnp.asarray(tokens), train=False),
        jnp.asarray(tokens), False, method="hidden", token_types=jnp.asarray(types))


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_mlm_with_a_pair_objective_against_numpy(task):
  config = _small(mlm_experiment, causal=False)
  config.data.layout = f"{task}_pairs"
  config.model.type_vocab_size = 2
  config.mlm.pair_loss_weight = 0.5
  tokens = _tokens()
  types = np.zeros_like(tokens)
  types[:, 4:9] = 1
  batch = {"tokens": tokens, "token_types": types, "pair_label": np.array([1, 0, 0, 1], np.int32)}
  params, state = jitted.init(mlm, config, batch)
  views = jitted.views(mlm, batch, jax.random.PRNGKey(1), 0, config)
  value, (metrics, _) = mlm.loss(params, state, views, jax.random.PRNGKey(2), 0, config, train=False)
  network = mlm.network(config)
  variables = {"params": params}
  kwargs = dict(train=False, token_types=jnp.asarray(types))
  pair_logits = np.asarray(network.apply(variables, views["inputs"], **kwargs)[1], np.float64)
  # BERT's pooler and classifier, in numpy from the parameters and [CLS]'s final state.
  hidden = np.asarray(network.apply(variables, views["inputs"], method=lambda m, t, **kw: m.backbone.hidden(t, **kw),
                                    **kwargs), np.float64)
  dense = lambda name, x: x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"], np.float64)
  np.testing.assert_allclose(pair_logits, dense("pair_classifier", np.tanh(dense("pooler", hidden[:, 0]))),
                             rtol=1e-5, atol=1e-6)
  chosen = np.zeros(tokens.shape, bool)
  np.put_along_axis(chosen, np.asarray(views["predict_at"]), np.asarray(views["weights"]), axis=1)
  logits = np.asarray(network.apply(variables, views["inputs"], **kwargs)[0], np.float64)
  mlm_loss = -np.take_along_axis(_log_softmax(logits), tokens[..., None], -1)[..., 0][chosen].mean()
  labels = batch["pair_label"]
  pair_loss = -_log_softmax(pair_logits)[np.arange(4), labels].mean()
  np.testing.assert_allclose(float(value), mlm_loss + 0.5 * pair_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics[f"{task}_loss"]), pair_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics[f"{task}_accuracy"]),
                             (pair_logits.argmax(-1) == labels).mean(), rtol=1e-6)


def test_packed_next_token_targets_stay_inside_each_text():
  tokens = jnp.asarray([[2, 7, 3, 2, 8, 9, 3, 0]])
  segments = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0]])
  np.testing.assert_array_equal(clm.targets_weight(tokens, segments),
                                [[True, True, False, True, True, True, False]])
  np.testing.assert_array_equal(clm.targets_weight(tokens),
                                [[True, True, True, True, True, True, False]])


def test_pair_layouts_need_token_types_one_micro_batch_and_mlm():
  config = _small(mlm_experiment, causal=False)
  config.data.layout = "nsp_pairs"
  with pytest.raises(ConfigError, match="type_vocab_size=2"):
    mlm.check_config(config)
  config.model.type_vocab_size = 2
  mlm.check_config(config)
  config.grad_accumulation = 2
  with pytest.raises(ConfigError, match="grad_accumulation"):
    mlm.check_config(config)
  causal = _small(clm_experiment, causal=True)
  causal.data.layout = "sop_pairs"
  with pytest.raises(ConfigError, match="sentence pairs"):
    clm.check_config(causal)

"""Masked language modelling: "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", Devlin, Chang, Lee, Toutanova, NAACL 2019 (arXiv:1810.04805).

On device, 15% of the ordinary tokens of every sequence (rounded, at least one, at most
`max_predictions`) are chosen; of those 80% become [MASK], 10% a random ordinary token and
10% stay (ssl_jax/data/text.py `mask_tokens`). The encoder (`config.model`: a non-causal
Transformer) reads the corrupted sequence; at the chosen positions only, BERT's MLM head
(dense, GELU, LayerNorm) transforms the hidden state and the tied output layer predicts
the original token, as the original BERT code does (`max_predictions_per_seq`: the
vocabulary-sized output layer is most of a small model's step, and 85% of it would be
wasted on positions the loss ignores). The loss is the cross-entropy averaged over the
chosen positions. Metrics: `mlm_accuracy` (top-1 at the chosen positions) and
`masked_fraction` (chosen / ordinary tokens). The random token is drawn among the
ordinary ones (HF's collator draws from the whole vocabulary, specials included).

With sentence pairs (`config.data.layout` "nsp_pairs" or "sop_pairs",
ssl_jax/data/sequences.py) the batch is [CLS] A [SEP] B [SEP] with token types, and BERT's
second objective is added: the pooler (dense + tanh on [CLS]'s final state) feeds a 2-way
classifier of `pair_label` (B follows A: next-sentence prediction, Devlin et al. section
3.1; A and B in their order: ALBERT's sentence-order prediction, Lan et al. 2020). The
loss is the MLM mean plus `pair_loss_weight` times the pair cross-entropy, a mean over
examples (BERT's pretraining loss is their sum); metrics `nsp_accuracy` or
`sop_accuracy` and both loss terms. Packed batches (layout "packed") carry each text's
segments and positions to the encoder. Evaluation (`encode`) pools the encoder's hidden
states of one uncorrupted text (`config.model.pool`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import sequences, text
from ssl_jax.methods.lib import defaults, losses
from ssl_jax.models import transformer


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mask_rate = 0.15         # share of ordinary tokens chosen for prediction
  config.mask_token_fraction = 0.8  # of the chosen: replaced by [MASK]
  config.random_token_fraction = 0.1  # of the chosen: replaced by a random token (rest: kept)
  config.pair_loss_weight = 1.0   # weight of NSP/SOP beside MLM (sentence-pair layouts)
  config.max_predictions = 0      # prediction slots per sequence; 0: ceil(mask_rate x length)
  return validate.strict_update(config, overrides, "mlm")


class MaskedLM(nn.Module):
  """tokens [B, L] (+ the layout's segments/positions/token_types) -> token logits at
  `predict_at` [B, K] ([B, K, vocab]; every position [B, L, vocab] if None), and with
  `pair_head` the pair classifier's logits [B, 2] too."""
  backbone: transformer.Transformer
  pair_head: bool = False

  @nn.compact
  def __call__(self, tokens, train: bool, predict_at=None, **sequence):
    hidden = self.backbone.hidden(tokens, train, **sequence)
    selected = (hidden if predict_at is None else
                jnp.take_along_axis(hidden, predict_at[..., None], axis=1))
    x = nn.Dense(self.backbone.width, kernel_init=transformer.normal,
                 name="head_transform")(selected)
    x = nn.LayerNorm(transformer.LN_EPSILON, name="head_norm")(nn.gelu(x, approximate=False))
    logits = self.backbone.logits(x)
    if not self.pair_head:
      return logits
    pooled = nn.tanh(nn.Dense(self.backbone.width, kernel_init=transformer.normal,
                              name="pooler")(hidden[:, 0]))
    return logits, nn.Dense(2, kernel_init=transformer.normal, name="pair_classifier")(pooled)


def pair_task(config) -> str | None:
  """"nsp" or "sop" when the data are sentence pairs, else None."""
  layout = sequences.layout(config.data)
  return layout.split("_")[0] if layout in sequences.PAIR_LAYOUTS else None


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.mlm, or a causal config.model."""
  settings = config.mlm
  validate.number("mlm.mask_rate", settings.mask_rate, low=0, high=1, low_open=True)
  for name in ("mask_token_fraction", "random_token_fraction"):
    validate.number(f"mlm.{name}", settings[name], low=0, high=1)
  if settings.mask_token_fraction + settings.random_token_fraction > 1:
    raise errors.ConfigError("mlm.mask_token_fraction + mlm.random_token_fraction exceeds 1")
  if config.model.get("causal"):
    raise errors.ConfigError("mlm needs a bidirectional encoder: config.model.causal=False")
  validate.number("mlm.pair_loss_weight", settings.pair_loss_weight, low=0)
  validate.number("mlm.max_predictions", settings.max_predictions, low=0,
                  high=config.data.max_length, integer=True)
  if pair_task(config):
    if config.model.get("type_vocab_size", 0) < 2:
      raise errors.ConfigError(f"data.layout={config.data.layout!r} gives sentence pairs: set "
                               "config.model.type_vocab_size=2 (BERT's token types)")
    if config.get("grad_accumulation", 1) > 1:
      # A mean over chosen tokens plus a mean over examples: no one weight per micro-batch
      # makes their accumulated sum exact (engine.loss_and_grads).
      raise errors.ConfigError("grad_accumulation > 1 is exact for MLM alone, not with "
                               f"data.layout={config.data.layout!r}: use grad_accumulation=1")


def network(config) -> MaskedLM:
  check_config(config)
  return MaskedLM(models.build(config.model), pair_head=pair_task(config) is not None)


def init(rng, config, example_batch) -> tuple[Any, Any]:
  example = {k: v[:1] for k, v in example_batch.items()}
  params = network(config).init(rng, example["tokens"], train=False,
                                **transformer.sequence_inputs(example))["params"]
  return params, {}


def views(batch, rng, step, config) -> dict:
  del step
  settings = config.mlm
  inputs, predict_at, weights = text.mask_tokens(
      batch["tokens"], rng, config.model.vocab_size, settings.mask_rate,
      settings.mask_token_fraction, settings.random_token_fraction,
      settings.max_predictions or None)
  views = {"inputs": inputs, "tokens": batch["tokens"], "predict_at": predict_at,
           "weights": weights, **transformer.sequence_inputs(batch)}
  if "pair_label" in batch:
    views["pair_label"] = batch["pair_label"]
  return views


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del step
  out = network(config).apply({"params": params}, views["inputs"], train=train,
                              predict_at=views["predict_at"], rngs={"dropout": rng},
                              **transformer.sequence_inputs(views))
  task = pair_task(config)
  logits, pair_logits = out if task else (out, None)
  targets = jnp.take_along_axis(views["tokens"], views["predict_at"], axis=1)
  value, accuracy = losses.token_cross_entropy(logits, targets, views["weights"])
  ordinary = jnp.sum((views["tokens"] >= len(text.SPECIAL_TOKENS)).astype(jnp.float32))
  chosen = jnp.sum(views["weights"].astype(jnp.float32))
  metrics = {"mlm_accuracy": accuracy, "masked_fraction": chosen / jnp.maximum(ordinary, 1.0)}
  if task:
    pair_value, pair_accuracy = losses.token_cross_entropy(  # a mean over the examples
        pair_logits, views["pair_label"], jnp.ones_like(views["pair_label"]))
    metrics.update({"mlm_loss": value, f"{task}_loss": pair_value,
                    f"{task}_accuracy": pair_accuracy})
    value = value + config.mlm.pair_loss_weight * pair_value
  return value, (metrics, method_state)


# The loss is a mean over the chosen tokens of examples laid out on the leading axis:
# gradient accumulation is exact with each micro-batch weighted by its chosen count.
PER_EXAMPLE_LOSS = True


def loss_weight(views, config):
  del config
  return jnp.sum(views["weights"].astype(jnp.float32))


update = defaults.no_update
backbone = defaults.backbone
encode = defaults.encode_tokens_with(backbone)

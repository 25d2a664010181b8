"""Causal language modelling, as GPT: "Improving Language Understanding by Generative
Pre-Training", Radford, Narasimhan, Salimans, Sutskever, 2018; GPT-2: "Language Models
are Unsupervised Multitask Learners", Radford et al. 2019.

The decoder (`config.model`: a causal Transformer, each position seeing itself and the
earlier ones only) reads every sequence, and the tied output layer at position t predicts
token t + 1; the loss is the mean cross-entropy over the predicted positions whose target
is not [PAD] (the [SEP] that ends a text is predicted, so the model learns where texts
stop). Metrics: `perplexity` (exp of the loss) and `next_token_accuracy`. Evaluation
(`encode`) pools the hidden states (`config.model.pool`; "last": the state after the
whole text). Packed batches (`config.data.layout` "packed", ssl_jax/data/sequences.py)
carry each text's segments and positions: no text attends to another, and the first token
of a text is never a target of the previous text's last one.
"""
from typing import Any

import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import sequences, text
from ssl_jax.methods.lib import defaults, losses
from ssl_jax.models import transformer


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  return validate.strict_update(config, overrides, "clm")


def check_config(config) -> None:
  """ConfigError unless config.model is a causal decoder (config.clm has no fields)."""
  if not config.model.get("causal"):
    raise errors.ConfigError("clm needs a causal decoder: config.model.causal=True")
  if sequences.layout(config.data) in sequences.PAIR_LAYOUTS:
    raise errors.ConfigError(f"data.layout={config.data.layout!r} builds sentence pairs for "
                             "mlm; clm reads single, packed or packed_across texts")


def network(config):
  check_config(config)
  return models.build(config.model)


def init(rng, config, example_batch) -> tuple[Any, Any]:
  params = network(config).init(rng, example_batch["tokens"][:1], train=False)["params"]
  return {"backbone": params}, {}


def views(batch, rng, step, config) -> dict:
  del rng, step, config
  return {"tokens": batch["tokens"], **transformer.sequence_inputs(batch)}


def targets_weight(tokens, segments=None):
  """bool [B, L-1]: which of tokens[:, 1:] are targets: not [PAD], and (packed) in the
  same text as the position that predicts them."""
  weight = tokens[:, 1:] != text.PAD
  if segments is not None:
    weight = weight & (segments[:, 1:] == segments[:, :-1])
  return weight


def next_token_loss(logits, tokens, segments=None):
  """(mean cross-entropy, accuracy) of logits [B, L-1, V] predicting tokens[:, 1:], over
  the targets of `targets_weight`."""
  return losses.token_cross_entropy(logits, tokens[:, 1:], targets_weight(tokens, segments))


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del step
  model = network(config)
  tokens = views["tokens"]
  hidden = model.apply({"params": params["backbone"]}, tokens, train, rngs={"dropout": rng},
                       method=model.hidden, **transformer.sequence_inputs(views))
  logits = model.apply({"params": params["backbone"]}, hidden[:, :-1], method=model.logits)
  value, accuracy = next_token_loss(logits, tokens, views.get("segments"))
  return value, ({"perplexity": jnp.exp(value), "next_token_accuracy": accuracy}, method_state)


# The loss is a mean over the non-pad next-token targets of examples on the leading axis:
# gradient accumulation is exact with each micro-batch weighted by its target count.
PER_EXAMPLE_LOSS = True


def loss_weight(views, config):
  del config
  return jnp.sum(targets_weight(views["tokens"], views.get("segments")).astype(jnp.float32))


update = defaults.no_update
backbone = defaults.backbone
encode = defaults.encode_tokens_with(backbone)

"""Masked language modelling: "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", Devlin, Chang, Lee, Toutanova, NAACL 2019 (arXiv:1810.04805).

On device, 15% of the ordinary tokens of every sequence are chosen; of those 80% become
[MASK], 10% a random ordinary token and 10% stay (ssl_jax/data/text.py `mask_tokens`). The
encoder (`config.model`: a non-causal Transformer) reads the corrupted sequence, BERT's
MLM head (dense, GELU, LayerNorm) transforms every position's hidden state, and the tied
output layer predicts the original token; the loss is the cross-entropy at the chosen
positions only, averaged over them (logits are computed at every position, as
BertForMaskedLM does). Metrics: `mlm_accuracy` (top-1 at the chosen positions) and
`masked_fraction` (chosen / ordinary tokens). The random token is drawn among the
ordinary ones (HF's collator draws from the whole vocabulary, specials included).

Next-sentence prediction, BERT's second objective, is not implemented (RoBERTa found it
unhelpful; the issue lists it as optional). Evaluation (`encode`) pools the encoder's
hidden states of the uncorrupted text (`config.model.pool`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import text
from ssl_jax.methods.lib import defaults, losses
from ssl_jax.models import transformer


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mask_rate = 0.15         # share of ordinary tokens chosen for prediction
  config.mask_token_fraction = 0.8  # of the chosen: replaced by [MASK]
  config.random_token_fraction = 0.1  # of the chosen: replaced by a random token (rest: kept)
  return validate.strict_update(config, overrides, "mlm")


class MaskedLM(nn.Module):
  backbone: transformer.Transformer

  @nn.compact
  def __call__(self, tokens, train: bool):
    hidden = self.backbone.hidden(tokens, train)
    x = nn.Dense(self.backbone.width, kernel_init=transformer.normal, name="head_transform")(hidden)
    x = nn.LayerNorm(transformer.LN_EPSILON, name="head_norm")(nn.gelu(x, approximate=False))
    return self.backbone.logits(x)


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


def network(config) -> MaskedLM:
  check_config(config)
  return MaskedLM(models.build(config.model))


def init(rng, config, example_batch) -> tuple[Any, Any]:
  params = network(config).init(rng, example_batch["tokens"][:1], train=False)["params"]
  return params, {}


def views(batch, rng, step, config) -> dict:
  del step
  inputs, chosen = text.mask_tokens(batch["tokens"], rng, config.model.vocab_size,
                                    config.mlm.mask_rate, config.mlm.mask_token_fraction,
                                    config.mlm.random_token_fraction)
  return {"inputs": inputs, "targets": batch["tokens"], "chosen": chosen}


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del step
  logits = network(config).apply({"params": params}, views["inputs"], train=train,
                                 rngs={"dropout": rng})
  value, accuracy = losses.token_cross_entropy(logits, views["targets"], views["chosen"])
  ordinary = jnp.sum((views["targets"] >= len(text.SPECIAL_TOKENS)).astype(jnp.float32))
  chosen = jnp.sum(views["chosen"].astype(jnp.float32))
  return value, ({"mlm_accuracy": accuracy,
                  "masked_fraction": chosen / jnp.maximum(ordinary, 1.0)}, method_state)


# The loss is a mean over the chosen tokens of examples laid out on the leading axis:
# gradient accumulation is exact with each micro-batch weighted by its chosen count.
PER_EXAMPLE_LOSS = True


def loss_weight(views, config):
  del config
  return jnp.sum(views["chosen"].astype(jnp.float32))


update = defaults.no_update
backbone = defaults.backbone
encode = defaults.encode_tokens_with(backbone)

"""CLIP: "Learning Transferable Visual Models From Natural Language Supervision",
Radford et al., ICML 2021 (arXiv:2103.00020).

An image encoder (`config.model`: ResNet or ViT, pooled features) and a text encoder
(`config.text_model`: a Transformer over the caption's tokens, `data.text_key` tokenised
on the host into `tokens`), each followed by a linear projection without bias to a
`embed_dim` joint space and l2-normalised. The loss is the symmetric InfoNCE over the
global batch (`losses.clip_loss`): logits = exp(t) * I @ T^T, the mean of the image->text
and text->image cross-entropies. The temperature is learned as the log-scale t,
initialised to log(1 / 0.07) and clipped at log(100) in the forward pass ("clipped to
prevent scaling the logits by more than 100", the paper's section 2.5).

Differences from the paper: the text encoder pools the mean of its non-pad states (the
paper's causal Transformer takes the [EOS] state); the image view is a random resized crop
and flip from a view group (the paper uses a random square crop only).

`encode` gives {"backbone": the image encoder's pooled features (what probes score),
"joint": the l2-normalised image embedding}; `encode_text` gives the l2-normalised text
embeddings of token ids, so zero-shot classification (ssl_jax/evals/zeroshot.py) can
compare both.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import defaults, losses, views as views_lib


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.embed_dim = 128           # joint embedding width
  config.init_temperature = 0.07   # the paper's
  config.max_logit_scale = 100.0   # exp(t) is clipped here
  return validate.strict_update(config, overrides, "clip")


class DualEncoder(nn.Module):
  image_encoder: nn.Module
  text_encoder: nn.Module
  embed_dim: int
  init_temperature: float

  def setup(self):
    self.image_projection = nn.Dense(self.embed_dim, use_bias=False, name="image_projection")
    self.text_projection = nn.Dense(self.embed_dim, use_bias=False, name="text_projection")
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(
        math.log(1 / self.init_temperature)), ())

  def embed_images(self, images, train: bool):
    return losses.l2_normalize(self.image_projection(self.image_encoder(images, train=train)))

  def embed_texts(self, tokens, train: bool):
    return losses.l2_normalize(self.text_projection(self.text_encoder(tokens, train=train)))

  def __call__(self, images, tokens, train: bool):
    return self.embed_images(images, train), self.embed_texts(tokens, train), self.logit_scale


def check_config(config) -> None:
  """ConfigError for the first invalid value of config.clip or config.views, or a missing
  config.text_model."""
  _check_settings(config)
  _check_views(config)


def _check_settings(config) -> None:
  settings = config.clip
  validate.number("clip.init_temperature", settings.init_temperature, low=0, low_open=True)
  validate.number("clip.max_logit_scale", settings.max_logit_scale, low=1)
  if "text_model" not in config:
    raise errors.ConfigError("clip needs config.text_model (a Transformer, "
                               "models.transformer.default_config)")


def _check_views(config) -> None:
  views_lib.check_one_group(config, 1, "clip needs exactly one view group with count=1")


def network(config) -> DualEncoder:
  _check_settings(config)
  settings = config.clip
  return DualEncoder(models.build(config.model), models.build(config.text_model),
                     settings.embed_dim, settings.init_temperature)


def init(rng, config, example_batch) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, images, example_batch["tokens"][:1], train=False)
  return variables["params"], {"batch_stats": variables.get("batch_stats", {})}


def views(batch, rng, step, config) -> dict:
  del step
  _check_views(config)
  groups = views_lib.make(batch["image"], rng, config)
  return {"images": groups[0], "tokens": batch["tokens"]}


# The backbone's stochastic depth (a ViT's drop_path_rate) draws from the step's rng.
DROP_PATH = True


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del step
  (images, texts, log_scale), updates = network(config).apply(
      {"params": params, **method_state}, views["images"], views["tokens"], train=train,
      mutable=["batch_stats"], rngs={"dropout": rng})
  scale = jnp.exp(jnp.minimum(log_scale, math.log(config.clip.max_logit_scale)))
  value, logits = losses.clip_loss(images, texts, scale)
  accuracy = jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(logits.shape[0]))
  return value, ({"logit_scale": scale, "image_to_text_top1": accuracy,
                  "collapsed_loss": jnp.log(jnp.float32(logits.shape[0]))},
                 {**method_state, **updates})


update = defaults.no_update


def backbone(params, method_state, config) -> dict:
  del config
  return models.variables(params["image_encoder"], method_state["batch_stats"].get("image_encoder"))


def text_backbone(params, method_state, config) -> dict:
  """The text tower's variables (a Transformer built from config.text_model), for export."""
  del method_state, config
  return models.variables(params["text_encoder"])


def encode(params, method_state, batch, config) -> dict:
  variables = {"params": params, **method_state}
  images = augment.evaluation_images(batch["image"], config)
  joint = network(config).apply(variables, images, False, method=DualEncoder.embed_images)
  return {"backbone": models.encode_images(backbone(params, method_state, config), batch["image"],
                                           config),
          "joint": joint}


def encode_text(params, method_state, tokens, config) -> jax.Array:
  """l2-normalised joint embeddings [N, embed_dim] of token ids [N, L]."""
  return network(config).apply({"params": params, **method_state}, tokens, False,
                               method=DualEncoder.embed_texts)

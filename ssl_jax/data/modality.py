"""What the evaluator's raw-input baseline is for each modality of data.

`config.data.modality` names it: "image" (the normalised pixels at the evaluation
resolution, flattened), "vector" (the record's `data.input_key` feature as floats) or
"text" (a bag of words over the tokenizer's vocabulary: log(1 + count) of each
non-special piece, l2-normalised per text. This is TF-IDF up to each feature's IDF
factor, and the probes standardise every feature, which removes any per-feature factor:
a linear probe on it is a TF-IDF logistic regression).
A modality is added here, with its raw features, when its first dataset arrives.
"""
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.validate import ConfigError

MODALITIES = ("image", "vector", "text")
FIRST_ORDINARY_TOKEN = 5  # [PAD] [UNK] [CLS] [SEP] [MASK] come first (ssl_jax/data/text.py)


def raw_features(batch: dict, config: ml_collections.ConfigDict) -> jax.Array:
  """[B, D] float32 features of the raw input, for the baseline every probe runs beside."""
  modality = config.data.modality
  if modality == "image":
    from ssl_jax import views  # pylint: disable=import-outside-toplevel
    images = views.evaluation_images(batch["image"], config)
    return images.reshape(images.shape[0], -1)
  if modality == "vector":
    values = batch[config.data.input_key]
    return jnp.asarray(values, jnp.float32).reshape(values.shape[0], -1)
  if modality == "text":
    tokens = batch["tokens"]
    counts = jax.vmap(lambda t: jnp.zeros((config.data.vocab_size,), jnp.float32).at[t].add(
        (t >= FIRST_ORDINARY_TOKEN).astype(jnp.float32)))(tokens)
    bag = jnp.log1p(counts)
    return bag / jnp.maximum(jnp.linalg.norm(bag, axis=1, keepdims=True), 1e-12)
  raise ConfigError(f"data.modality={modality!r}; expected one of {MODALITIES}")

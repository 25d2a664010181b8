"""What the evaluator's raw-input baseline is for each modality of data.

`config.data.modality` names it: "image" (the normalised pixels at the evaluation
resolution, flattened) or "vector" (the record's `data.input_key` feature as floats).
A modality is added here, with its raw features, when its first dataset arrives.
"""
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.validate import ConfigError

MODALITIES = ("image", "vector")


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
  raise ConfigError(f"data.modality={modality!r}; expected one of {MODALITIES}")

"""What the evaluator's raw-input baseline is for each modality of data.

`config.data.modality` names it: "image" (the normalised pixels at the evaluation
resolution, flattened), "video" (the same for each frame, averaged over the video's
frames: the pixel counterpart of how the probes read a frame encoder, whose features are
averaged over the frames too, models.encode), "vector" (the record's `data.input_key`
feature as floats) or "text" (a bag of words over the tokenizer's vocabulary: log(1 +
count) of each non-special piece, l2-normalised per text. This is TF-IDF up to each
feature's IDF factor, and the probes standardise every feature, which removes any
per-feature factor: a linear probe on it is a TF-IDF logistic regression).
A modality is added here, with its raw features, when its first dataset arrives.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax.core import validate
from ssl_jax.core.errors import ConfigError
from ssl_jax.data import augment, sequences


MODALITIES = ("image", "video", "vector", "text")
# What raw_features computes for each modality, as the evaluation reports name it.
RAW_INPUT = {"image": "normalised pixels, flattened",
             "video": "each frame's normalised pixels, flattened, averaged over the frames",
             "vector": "vector inputs as floats, flattened",
             "text": "bag of words: log(1 + count) per piece, l2-normalised (TF-IDF)"}
FIRST_ORDINARY_TOKEN = 5  # [PAD] [UNK] [CLS] [SEP] [MASK] come first (ssl_jax/data/text.py)


def check_config(data: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first config.data field that no loader or baseline accepts."""
  if data.modality not in MODALITIES:
    raise ConfigError(f"data.modality={data.modality!r}; expected one of {MODALITIES}")
  if data.modality == "video":
    validate.number("data.frames", data.get("frames"), low=1, integer=True)
  if data.modality in ("image", "video") or "image_size" in data:
    validate.number("data.image_size", data.image_size, low=1, integer=True)
    if len(data.mean) != len(data.std) or not data.mean:
      raise ConfigError(f"data.mean={tuple(data.mean)} and data.std={tuple(data.std)} need one "
                        "value per image channel each")
    for value in data.std:
      validate.number("data.std", value, low=0, low_open=True)
  if "vocab_size" in data:
    validate.number("data.vocab_size", data.vocab_size, low=FIRST_ORDINARY_TOKEN + 1,
                    integer=True)
    validate.number("data.max_length", data.max_length, low=2, integer=True)
  if "layout" in data:
    sequences.check_config(data)


def placeholder_example(data: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """A batch of one all-zero record with the keys, shapes and dtypes training reads after
  the host preprocessing (engine.example_batch reads the real first record), decided from
  the data config alone: what compiling for hardware and data one does not have needs
  (ssl_jax/tools/aot.py). Images: the host-resized (else image_size) square with one
  channel per data.mean entry; videos: data.frames such images; text: data.max_length
  token ids (or what data.layout makes of them: ssl_jax/data/sequences.py); labels: one
  int32."""
  example = sequences.placeholder_example(data)
  if example is not None:  # packed texts or sentence pairs
    return example
  example = {}
  for feature in data.features:
    if data.get("tokenizer") and feature == data.get("text_key", "text"):
      example["tokens"] = np.zeros((1, data.max_length), np.int32)
    elif feature == "image":
      side = data.get("host_resize") or data.image_size
      example[feature] = np.zeros((1, side, side, len(data.mean)), np.uint8)
    elif feature == "video":
      side = data.image_size
      example[feature] = np.zeros((1, data.frames, side, side, len(data.mean)), np.uint8)
    elif feature == data.get("label_key"):
      example[feature] = np.zeros((1,), np.int32)
    else:
      raise ConfigError(f"data.features: the shape of {feature!r} does not follow from the data "
                        "config (only images, tokenised text and the label field do)")
  return example


def raw_features(batch: dict, config: ml_collections.ConfigDict) -> jax.Array:
  """[B, D] float32 features of the raw input, for the baseline every probe runs beside."""
  modality = config.data.modality
  if modality == "image":
    images = augment.evaluation_images(batch["image"], config)
    return images.reshape(images.shape[0], -1)
  if modality == "video":
    videos = batch["video"]
    frames = augment.evaluation_images(videos.reshape(-1, *videos.shape[2:]), config)
    return frames.reshape(videos.shape[0], videos.shape[1], -1).mean(axis=1)
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

"""Weighted k-nearest-neighbour classification on frozen features.

The protocol of InstDisc (Wu et al. 2018) as used by DINO: cosine similarity, the k
nearest training features vote for their class with weight exp(similarity / T).
"""
import numbers
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax.core import errors, validate
from ssl_jax.methods.lib import losses


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.ks = (20, 200)          # neighbours that vote; the smallest is reported as top1
  config.temperature = 0.07      # vote weight exp(cosine / T)
  return validate.strict_update(config, overrides, "eval.knn")


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.eval.knn (each k is also checked
  against the bank size, which only the features know, by knn_predict)."""
  ks = config.ks
  if (not isinstance(ks, (tuple, list)) or not ks
      or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in ks)):
    raise errors.ConfigError(f"eval.knn.ks={ks!r}: each k must be an integer >= 1 (and at most "
                             "the bank size), e.g. (20, 200)")
  validate.number("eval.knn.temperature", config.temperature, low=0, low_open=True)


def protocol(config: ml_collections.ConfigDict) -> dict:
  return {"similarity": "cosine", "weighting": "exp(cos/T)", "ks": list(config.ks),
          "temperature": config.temperature, "reported_k": min(config.ks)}


def evaluate(train, test, *, num_classes: int, config: ml_collections.ConfigDict) -> dict:
  """{"top1": accuracy at the smallest k, "top1_by_k": {k: accuracy}}."""
  check_config(config)
  accuracy = knn_accuracy(*train, *test, num_classes=num_classes, ks=tuple(config.ks),
                          temperature=config.temperature)
  return {"top1": accuracy[min(accuracy)], "top1_by_k": {str(k): v for k, v in accuracy.items()}}


@partial(jax.jit, static_argnames=("ks", "num_classes"))
def _vote(queries, bank, bank_labels, *, ks, num_classes, temperature):
  similarity = losses.l2_normalize(queries) @ losses.l2_normalize(bank).T
  top_similarity, top_index = jax.lax.top_k(similarity, max(ks))
  weights = jnp.exp(top_similarity / temperature)
  votes = jax.nn.one_hot(bank_labels[top_index], num_classes) * weights[..., None]
  # Neighbours come sorted by similarity, so the k nearest are the first k.
  return {k: jnp.argmax(votes[:, :k].sum(axis=1), axis=-1) for k in ks}


def knn_predict(train_features, train_labels, test_features, *, num_classes: int,
                ks=(20, 200), temperature: float = 0.07, chunk_size: int = 1024) -> dict:
  """Predicted labels of every test feature for each k: {k: int array [N_test]}."""
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1 or max(ks) > len(train_features):
    raise errors.ConfigError(
        f"eval.knn.ks={ks}: each k must be in [1, {len(train_features)}], the number of "
        f"train examples it votes over; pass e.g. --config.eval.knn.ks=\"({min(20, len(train_features))},)\"")
  bank, bank_labels = jnp.asarray(train_features), jnp.asarray(train_labels)
  n = len(test_features)
  padded = np.zeros((-(-n // chunk_size) * chunk_size, test_features.shape[1]), np.float32)
  padded[:n] = test_features  # fixed-size chunks: one compilation
  predictions = {k: [] for k in ks}
  for start in range(0, n, chunk_size):
    chunk = _vote(jnp.asarray(padded[start:start + chunk_size]), bank, bank_labels, ks=ks,
                  num_classes=num_classes, temperature=temperature)
    for k in ks:
      predictions[k].append(np.asarray(chunk[k]))
  return {k: np.concatenate(v)[:n] for k, v in predictions.items()}


def knn_accuracy(train_features, train_labels, test_features, test_labels, **kwargs) -> dict:
  """Top-1 accuracy for each k: {k: float}."""
  predictions = knn_predict(train_features, train_labels, test_features, **kwargs)
  return {k: float(np.mean(p == np.asarray(test_labels))) for k, p in predictions.items()}

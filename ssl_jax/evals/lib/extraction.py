"""Frozen-feature extraction: a jitted, sharded forward pass over a whole split, for
`python -m ssl_jax.evaluate` and the in-loop monitor."""
import math
import sys
import time
from typing import Callable, Sequence

import jax
import numpy as np

from ssl_jax.core import parallel
from ssl_jax.core.errors import NonFiniteFeaturesError
from ssl_jax.data import pipeline, preprocess, sources


def extract(encode: Callable, source, mesh, global_batch_size: int, *, keys: Sequence[str],
            label_key: str = "label", preprocess=None,
            progress: Callable[[int, int], None] | None = None) -> tuple[dict, np.ndarray]:
  """Runs `encode(batch) -> features | {name: features}` over every record of `source`.

  `batch` holds the global arrays of `keys` (whatever the modality). Returns
  ({name: features [N, D] float32}, labels [N] int32) on every host, in source order, the
  names in the encoder's order; an encoder returning one array gives the name "features".
  """
  parallel.check_global_batch_size(global_batch_size, mesh)
  local_batch_size = global_batch_size // jax.process_count()
  features, labels = {}, []
  total = math.ceil(len(source) / global_batch_size)
  # Every process yields the same number of batches (padded, mask=False), as the
  # global arrays need.
  batches = pipeline.eval_batches(source, batch_size=local_batch_size, keys=keys,
                                  preprocess=preprocess)
  for i, batch in enumerate(batches):
    mask = batch.pop("mask")
    inputs = parallel.to_global(batch, mesh)
    out = encode(inputs)
    out = out if isinstance(out, dict) else {"features": out}
    names = list(out)  # the encoder's order (tree operations sort a dict's keys)
    out = parallel.to_host({"features": out, "label": inputs[label_key],
                            "mask": parallel.to_global(mask, mesh)})
    for name in names:
      features.setdefault(name, []).append(np.asarray(out["features"][name])[out["mask"]])
    labels.append(out["label"][out["mask"]])
    if progress:
      progress(i + 1, total)
  return ({name: np.concatenate(parts).astype(np.float32) for name, parts in features.items()},
          np.concatenate(labels).astype(np.int32))


def log(text: str) -> None:
  """Progress of an evaluation, on process 0's stderr."""
  if jax.process_index() == 0:
    print(text, file=sys.stderr, flush=True)


def count_nonfinite(tree) -> int:
  return sum(int(np.size(x) - np.count_nonzero(np.isfinite(x)))
             for x in jax.tree.leaves(parallel.to_host(tree))
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def extract_splits(encode, config, mesh, splits: dict, name: str) -> dict:
  """{split_name: ({feature_set: x}, y)} for each split, checked finite."""
  data = config.data
  out = {}
  for split_name, split in splits.items():
    source = sources.get_source(data.name, split, data.data_dir)
    start = time.time()
    features, labels = extract(
        encode, source, mesh, config.eval.batch_size, keys=tuple(data.features),
        label_key=data.label_key, preprocess=preprocess.from_config(data))
    for set_name, x in features.items():
      bad = count_nonfinite(x)
      if bad:
        raise NonFiniteFeaturesError(
            f"the {name} {set_name} of {split} hold {bad} non-finite values (of {x.size}): "
            "no probe can score them. Evaluate an earlier checkpoint with --step.")
    out[split_name] = (features, labels)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in features.items())
    log(f"  {name}: {split} {shapes} in {time.time() - start:.1f}s")
  return out


class Encoder:
  """A method's jitted encode(params, method_state, batch), its feature sets in the order
  the method's `encode` names them. The first is the primary set, the network the
  method's official code evaluates (DINO's teacher before its student); jit hands a dict
  back with its keys sorted, so the order is recorded while tracing and restored here.
  Built once and bound to each set of weights (`bind`), so the pretrained and random-init
  networks share one compilation."""

  def __init__(self, method, config):
    self._order: list[str] = []

    def encode(params, method_state, batch):
      out = method.encode(params, method_state, batch, config)
      if isinstance(out, dict):
        self._order[:] = list(out)
      return out
    self._jitted = jax.jit(encode)

  def lower(self, *args):
    return self._jitted.lower(*args)

  def __call__(self, params, method_state, batch):
    out = self._jitted(params, method_state, batch)
    return {name: out[name] for name in self._order} if isinstance(out, dict) else out


def encoder(method, config) -> Encoder:
  return Encoder(method, config)


def bind(encode, params, method_state):
  return lambda batch: encode(params, method_state, batch)

"""Frozen-feature extraction: a jitted, sharded forward pass over a whole split."""
import math
from typing import Callable, Sequence

import jax
import numpy as np

from ssl_jax import parallel
from ssl_jax.data import pipeline


def extract(encode: Callable, source, mesh, global_batch_size: int, *, keys: Sequence[str],
            label_key: str = "label", preprocess=None,
            progress: Callable[[int, int], None] | None = None) -> tuple[dict, np.ndarray]:
  """Runs `encode(batch) -> features | {name: features}` over every record of `source`.

  `batch` holds the global arrays of `keys` (whatever the modality). Returns
  ({name: features [N, D] float32}, labels [N] int32) on every host, in source order; an
  encoder returning one array gives the name "features".
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
    out = parallel.to_host({"features": out, "label": inputs[label_key],
                            "mask": parallel.to_global(mask, mesh)})
    for name, value in out["features"].items():
      features.setdefault(name, []).append(np.asarray(value)[out["mask"]])
    labels.append(out["label"][out["mask"]])
    if progress:
      progress(i + 1, total)
  return ({name: np.concatenate(parts).astype(np.float32) for name, parts in features.items()},
          np.concatenate(labels).astype(np.int32))

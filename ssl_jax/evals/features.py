"""Frozen-feature extraction: a jitted, sharded forward pass over a whole split."""
import math
from typing import Callable

import jax
import numpy as np

from ssl_jax import parallel
from ssl_jax.data import pipeline


def extract(encode: Callable, source, mesh, global_batch_size: int,
            progress: Callable[[int, int], None] | None = None,
            image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Runs `encode(uint8 images) -> features` over every record of `source`.

  Returns (features [N, D] float32, labels [N] int32) on every host, in source order.
  `image_size` fits variable-size images on the host (see pipeline.fit_image).
  """
  parallel.check_global_batch_size(global_batch_size, mesh)
  local_batch_size = global_batch_size // jax.process_count()
  features, labels = [], []
  total = math.ceil(len(source) / global_batch_size)
  # Every process yields the same number of batches (padded, mask=False), as the
  # global arrays need.
  for i, batch in enumerate(pipeline.eval_batches(source, batch_size=local_batch_size,
                                                          image_size=image_size)):
    images = parallel.to_global(batch["image"], mesh)
    out = parallel.to_host({"features": encode(images), "label": parallel.to_global(batch["label"], mesh),
                            "mask": parallel.to_global(batch["mask"], mesh)})
    features.append(out["features"][out["mask"]])
    labels.append(out["label"][out["mask"]])
    if progress:
      progress(i + 1, total)
  return (np.concatenate(features).astype(np.float32), np.concatenate(labels).astype(np.int32))

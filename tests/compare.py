"""Comparing gradient pytrees in tests."""
import jax
import numpy as np


def relative_gap(got, want) -> float:
  """Largest difference of a leaf as a fraction of its scale, floored at 1e-2 of the
  largest gradient: a leaf whose gradient is zero in exact arithmetic (attention's key
  bias) holds only rounding, which is no measure of agreement."""
  got, want = [[np.asarray(x, np.float64) for x in jax.tree.leaves(t)] for t in (got, want)]
  floor = 1e-2 * max(np.abs(w).max() for w in want)
  return max(float(np.abs(g - w).max() / max(np.abs(w).max(), floor)) for g, w in zip(got, want))

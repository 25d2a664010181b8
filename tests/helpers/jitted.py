"""Method calls compiled for unit tests. Eager flax `init` and augmentation dispatch op by
op, which on these cores takes seconds (a small ResNet's init ~10 s); one compile at
XLA's lowest backend optimisation level takes about one."""
from functools import partial

import jax

fast_jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def init(method, config, example_batch, seed: int = 0):
  """method.init at PRNGKey(seed), compiled: (params, method_state)."""
  return fast_jit(lambda rng: method.init(rng, config, example_batch))(jax.random.PRNGKey(seed))


def views(method, batch, rng, step, config):
  """method.views of `batch`, compiled."""
  return fast_jit(lambda b, r: method.views(b, r, step, config))(batch, rng)

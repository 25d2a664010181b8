"""Where each leaf of the train state lives: replicated on every device, or split over the
mesh's 'fsdp' axis (fully sharded data parallel, ZeRO-3 style).

The mesh is (data, fsdp) (parallel.make_mesh, the only mesh constructor); the batch is split over both axes, so
every device computes on its own rows either way. With config.sharding.fsdp = F > 1 a
leaf that the rules shard is split F ways along one of its axes and each device keeps
1/F of it: parameters, optimizer moments and the method's state alike (EMA targets are
shaped like the parameters and so sharded like them; a queue is sharded along its
longest divisible axis). Nothing in a method or model changes: the leaves' shardings are
the train step's input and output shardings, and XLA inserts the all-gathers before a
parameter is used and the reduce-scatters of its gradient. The results are those of the
replicated step up to float32 rounding (tests/core/test_sharding.py).

Rules, big_vision style: `config.sharding.rules` is a sequence of (regex, strategy)
pairs matched with re.search against a leaf's path in the train state, as
jax.tree_util.keystr writes it (".params['backbone']['conv_init']['kernel']",
".opt_state[0].trace['backbone']...", ".method_state['target']..."); the first match
decides. Strategies: "fsdp" (split the largest axis that F divides; replicated when none
does) and "replicate". A leaf no rule matches is "fsdp" when F > 1. Leaves with fewer than
config.sharding.min_size elements (biases, normalisation scales, the step) stay
replicated whatever the rules say: splitting them saves nothing and costs a collective.
"""
import re
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_jax.core.errors import ConfigError
from ssl_jax.core.parallel import FSDP_AXIS
from ssl_jax.core.validate import number

STRATEGIES = ("fsdp", "replicate")


def default_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.fsdp = 1           # devices each sharded leaf is split over; 1: replicated, -1: all
  config.rules = ()         # ((regex, "fsdp" | "replicate"), ...): first match wins
  config.min_size = 2**14   # leaves with fewer elements are always replicated
  config.cpu_devices = 0    # devices a CPU host is split into; 0: by the model (training/cpu_devices.py)
  return config


def check_rules(sharding_config) -> list[tuple[re.Pattern, str]]:
  """The compiled rules; ConfigError for a malformed one, a bad min_size or cpu_devices."""
  number("sharding.min_size", sharding_config.min_size, low=0, integer=True)
  number("sharding.cpu_devices", sharding_config.get("cpu_devices", 0), low=0, integer=True)
  rules = []
  for rule in sharding_config.rules:
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
      raise ConfigError(f"sharding.rules entry {rule!r}: expected (regex, strategy)")
    pattern, strategy = rule
    if strategy not in STRATEGIES:
      raise ConfigError(f"sharding.rules entry {rule!r}: strategy {strategy!r} is not one of "
                        f"{', '.join(STRATEGIES)}")
    try:
      rules.append((re.compile(pattern), strategy))
    except re.error as error:
      raise ConfigError(f"sharding.rules entry {rule!r}: bad regex ({error})") from None
  return rules


def leaf_spec(shape: tuple[int, ...], strategy: str, fsdp: int, min_size: int) -> PartitionSpec:
  """The PartitionSpec of one leaf: its largest axis that `fsdp` divides goes on 'fsdp'
  (the later axis on a tie, a kernel's output channels), else replicated."""
  if strategy == "replicate" or fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return PartitionSpec()
  candidates = [(size, axis) for axis, size in enumerate(shape) if size % fsdp == 0]
  if not candidates:
    return PartitionSpec()
  _, axis = max(candidates)
  return PartitionSpec(*([None] * axis + [FSDP_AXIS]))


def state_shardings(abstract_state: Any, mesh: Mesh, sharding_config) -> Any:
  """NamedSharding for every leaf of `abstract_state` (shapes only) on `mesh`. Raises
  ConfigError for a malformed rule or one that matches no leaf (a misspelt path)."""
  fsdp = mesh.shape.get(FSDP_AXIS, 1)
  rules, used = check_rules(sharding_config), set()

  def sharding(path, leaf):
    name = jax.tree_util.keystr(path)
    strategy = "fsdp"
    for index, (pattern, rule_strategy) in enumerate(rules):
      if pattern.search(name):
        strategy = rule_strategy
        used.add(index)
        break
    return NamedSharding(mesh, leaf_spec(tuple(leaf.shape), strategy, fsdp,
                                         sharding_config.min_size))

  shardings = jax.tree_util.tree_map_with_path(sharding, abstract_state)
  unused = [sharding_config.rules[i] for i in range(len(rules)) if i not in used]
  if unused:
    raise ConfigError(f"sharding.rules {unused} match no leaf of the train state; paths look "
                      "like .params['backbone']['conv_init']['kernel'] (re.search)")
  return shardings


def _nbytes(shape, dtype) -> int:
  return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def bytes_per_device(abstract_state: Any) -> int:
  """The bytes one device holds of a state whose leaves carry shardings (the largest
  share, so uneven layouts are not flattered)."""
  return sum(_nbytes(leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None
                     else leaf.shape, leaf.dtype)
             for leaf in jax.tree.leaves(abstract_state))


def describe(abstract_state: Any) -> str:
  """"N of M leaves split, X MiB of Y MiB per device": the trainer's start-up line."""
  leaves = jax.tree.leaves(abstract_state)
  split = sum(1 for leaf in leaves if not leaf.sharding.is_fully_replicated)
  full = sum(_nbytes(leaf.shape, leaf.dtype) for leaf in leaves)
  return (f"{split} of {len(leaves)} state leaves split over 'fsdp': "
          f"{bytes_per_device(abstract_state) / 2**20:.3g} MiB of {full / 2**20:.3g} MiB "
          "per device")

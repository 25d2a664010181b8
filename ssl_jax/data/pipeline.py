"""grain loaders: a checkpointable, shuffled train stream and padded eval batches.

Both yield host-local numpy batches of this JAX process's shard; the trainer
turns them into one global array (`parallel.to_global`). Nothing here augments:
the host only reads, decodes and batches uint8, augmentation runs on device.

Train order is a pure function of (seed, epoch, process): each process owns a
fixed contiguous shard of the records (grain's `ShardByJaxProcess` split,
equal sizes, remainder dropped) and reads it in a fresh permutation every
epoch. Batches run across epoch boundaries, so only the very last, partial
batch of a finite run is dropped.

Resuming exactly: `iter(train_loader(...))` is a `grain.DatasetIterator`
whose `get_state()` / `set_state()` round-trip (a small JSON-able dict), and
which orbax saves through grain's handler. In a `CheckpointManager` the
`CheckpointSave`/`CheckpointRestore` args are registered with that handler
by grain itself, so the manager needs no `item_handlers` for it:

  import orbax.checkpoint as ocp
  from ssl_jax.data import pipeline

  iterator = iter(pipeline.train_loader(source, global_batch_size=256, seed=0))
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=pipeline.CheckpointSave(iterator)))
  ...
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=pipeline.CheckpointRestore(iterator)))  # `iterator` is set in place
  state, iterator = restored.state, restored.data

The state is only a position in the stream, `{"next_index": k}`: restore into
an iterator from a loader built with the same source (dataset and split), seed
and batch size (any worker count), or the run goes on from that position of a
different stream with no error. Each process writes its own
`process_I-of-N.json` and reads it back, so restore with the same process count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from ssl_jax.core.errors import ConfigError
from ssl_jax.data import feed

# The orbax handler for grain iterators, and the args that select it.
CHECKPOINT_HANDLER = grain.checkpoint.CheckpointHandler
CheckpointSave = grain.checkpoint.CheckpointSave
CheckpointRestore = grain.checkpoint.CheckpointRestore

# Background reading of the train stream (threads of this process).
PREFETCH_THREADS = 4
PREFETCH_BATCHES = 8

_MASK_KEY = "mask"

# A host-side, per-record function {feature: value} -> {feature: value}, applied before
# batching: fitting variable-size images, tokenising text (ssl_jax/data/preprocess.py).
# It must be picklable (a class instance, not a closure) for grain worker processes.
Preprocess = Callable[[dict], dict]


def per_process_batch_size(global_batch_size: int) -> int:
  """`global_batch_size` split evenly over JAX processes.

  Raises:
    ValueError: not a positive multiple of `jax.process_count()`.
  """
  process_count = jax.process_count()
  if (not isinstance(global_batch_size, (int, np.integer))
      or isinstance(global_batch_size, bool)
      or global_batch_size <= 0 or global_batch_size % process_count):
    raise ConfigError(
        f"global_batch_size={global_batch_size!r} must be a positive integer "
        f"divisible by jax.process_count()={process_count} (each process "
        "loads an equal share).")
  return int(global_batch_size) // process_count


def shard_range(num_records: int, *, drop_remainder: bool) -> tuple[int, int]:
  """[start, end) of this JAX process's contiguous share of `num_records`.

  Same split as grain's `ShardByJaxProcess`: equal shards of N // P records
  with `drop_remainder`, else the first N % P shards get one extra record.
  """
  options = grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder)
  index, count = options.shard_index, options.shard_count
  size, remainder = divmod(num_records, count)
  if drop_remainder:
    return index * size, (index + 1) * size
  start = index * size + min(index, remainder)
  return start, start + size + (1 if index < remainder else 0)


def stack_records(records: Sequence[Mapping[str, Any]],
                  keys: Sequence[str], preprocess: Preprocess | None = None
                  ) -> dict[str, np.ndarray]:
  """Stacks `keys` of records into one batch, after `preprocess` of each record (which
  may replace features: text -> token ids); 64-bit integers become int32 (JAX's default)."""
  if records:
    missing = [k for k in keys if k not in records[0]]
    if missing:
      raise KeyError(f"Records have no {missing}; they have "
                     f"{sorted(records[0])}. Pass `keys=` naming features "
                     "the dataset defines.")
  records = [{k: r[k] for k in keys} for r in records]
  if preprocess is not None:
    records = [preprocess(r) for r in records]
  names = list(records[0]) if records else list(keys)
  batch = {k: np.stack([np.asarray(r[k]) for r in records]) for k in names}
  return {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in batch.items()}


def read_batch(source: Sequence[Any], indices: Sequence[int],
               keys: Sequence[str], preprocess: Preprocess | None = None
               ) -> dict[str, np.ndarray]:
  """Reads and stacks `source[indices]`, in one batched read if possible."""
  return stack_records(read_records(source, [int(i) for i in indices]), keys, preprocess)


class Subset(Sequence):
  """The records of `source` at `indices`, as a random-access source of its own (a
  held-out slice of a split, chosen by index rather than by a split string)."""

  def __init__(self, source: Sequence[Any], indices: Sequence[int], name: str = "subset"):
    self.source, self.indices, self.name = source, np.asarray(indices, np.int64), name

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index):
    return self.source[int(self.indices[index])]

  def __getitems__(self, indices: Sequence[int]) -> list:
    return read_records(self.source, [int(self.indices[i]) for i in indices])

  def __repr__(self) -> str:  # grain compares it when an iterator state is restored
    return f"Subset({self.source!r}, {self.name}, {len(self)} records)"


def read_records(source: Sequence[Any], indices: Sequence[int]) -> list:
  # ArrayRecord answers one `__getitems__` ~10x faster than as many
  # `source[i]` calls, which each pay a thread-pool round trip.
  if hasattr(source, "__getitems__"):
    return source.__getitems__(indices)
  return [source[i] for i in indices]


class ReadBatch(grain.transforms.Map):
  """Maps a batch of record indices (shard-relative) to a batch of records.

  A class rather than a closure so that grain worker processes can pickle it.
  """

  def __init__(self, source: Sequence[Any], offset: int, keys: Sequence[str],
               preprocess: Preprocess | None = None):
    self.source, self.offset, self.keys = source, offset, tuple(keys)
    self.preprocess = preprocess

  def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return read_batch(self.source, np.asarray(indices) + self.offset, self.keys,
                      self.preprocess)


def train_loader(source: Sequence[Any], *, global_batch_size: int, seed: int,
                 keys: Sequence[str], num_epochs: int | None = None, worker_count: int = 0,
                 preprocess: Preprocess | None = None) -> grain.IterDataset:
  """Shuffled, process-sharded, batched training data.

  The pipeline shuffles and batches record *indices* and reads each batch
  with one batched read (grain's own batching would read record by record,
  ~5x slower here). Indices in epoch e are a permutation of this process's
  shard seeded by (seed + e), so the order is a pure function of
  (seed, epoch, process).

  Args:
    source: a random-access source, e.g. `sources.get_source(...)`.
    global_batch_size: examples per step over all processes; each process
      yields `global_batch_size // jax.process_count()` of them.
    seed: shuffle seed, an int in [0, 2**32).
    num_epochs: passes over the data; None repeats forever.
    worker_count: worker processes reading, decoding and preprocessing whole
      batches ahead (feed.ProcessBatches); 0: background threads of this process,
      enough for small images. The stream and its iterator state are the same
      for every worker count, so a run may resume with another.
    keys: record features to keep, e.g. ("image", "label") or ("tokens",).
    preprocess: a picklable per-record function applied on the host before
      batching (see `Preprocess`), or None.

  Returns:
    An iterable (a `grain.IterDataset` without workers). `iter()` of it yields dicts such as
    {"image": uint8 [b, H, W, C], "label": int32 [b]} and is a checkpointable
    `grain.DatasetIterator` (`get_state()`/`set_state()`; orbax: see the
    module docstring).

  Raises:
    ValueError: bad batch size or seed, or a shard too small for one batch.
  """
  batch_size = per_process_batch_size(global_batch_size)
  if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
    raise ConfigError(f"seed={seed!r} must be an integer in [0, 2**32).")
  start, end = shard_range(len(source), drop_remainder=True)
  if end - start < batch_size:
    raise ConfigError(
        f"This process's shard has {end - start} of the {len(source)} records "
        f"({jax.process_count()} processes), fewer than one per-process batch "
        f"of {batch_size} (global_batch_size={global_batch_size}).")
  dataset = (
      grain.MapDataset.range(end - start)
      .shuffle(seed=int(seed))  # Reseeds per epoch under `repeat`.
      .repeat(num_epochs)
      .batch(batch_size, drop_remainder=True)
      .map(ReadBatch(source, start, keys, preprocess)))
  if worker_count > 0:
    return _WorkerLoader(dataset, worker_count)
  # Prefetch counts whole batches: a few keep the device fed; grain's default
  # (500) would hold 500 batches, gigabytes for ImageNet-sized images.
  return dataset.to_iter_dataset(grain.ReadOptions(num_threads=PREFETCH_THREADS,
                                                   prefetch_buffer_size=PREFETCH_BATCHES))


class _WorkerLoader:
  """The same batches as `dataset.to_iter_dataset()`, computed by worker processes:
  `iter()` starts the pool (feed.ProcessBatches; the same iterator state)."""

  def __init__(self, dataset: grain.MapDataset, worker_count: int):
    self.dataset, self.worker_count = dataset, worker_count

  def __iter__(self) -> feed.ProcessBatches:
    return feed.ProcessBatches(self.dataset, self.worker_count,
                               ahead=max(PREFETCH_BATCHES, 2 * self.worker_count))


def eval_batches(source: Sequence[Any], *, batch_size: int, keys: Sequence[str],
                 preprocess: Preprocess | None = None,
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One in-order pass over this process's contiguous shard, in fixed shapes.

  Every batch has `batch_size` rows (per process), so the eval step compiles
  once: the last one is padded with zeros and `mask` is False on padding. Every
  process yields the same number of batches (fully masked ones where its shard
  is shorter), so collective eval steps line up across hosts.

  Yields:
    {"image": uint8 [batch_size, H, W, C], "label": int32 [batch_size],
     "mask": bool [batch_size]} (one entry per name in `keys`, plus "mask").

  Raises:
    ValueError: batch_size is not a positive integer.
  """
  if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ConfigError(f"batch_size={batch_size!r} must be a positive integer "
                     "(examples per process per eval batch).")
  num_records = len(source)
  if num_records == 0:
    return
  start, end = shard_range(num_records, drop_remainder=False)
  # The largest shard sets the batch count for every process.
  num_batches = math.ceil(
      math.ceil(num_records / jax.process_count()) / batch_size)
  # Shapes/dtypes for padding come from record 0, so an empty shard still
  # yields correctly shaped (all-masked) batches.
  template = {k: (v.shape[1:], v.dtype)
              for k, v in read_batch(source, [0], keys, preprocess).items()}
  for batch_index in range(num_batches):
    first = min(start + batch_index * batch_size, end)
    indices = range(first, min(first + batch_size, end))
    batch = {k: np.zeros((batch_size, *shape), dtype)
             for k, (shape, dtype) in template.items()}
    if indices:
      records = read_batch(source, indices, keys, preprocess)
      for k in batch:
        batch[k][:len(indices)] = records[k]
    batch[_MASK_KEY] = np.arange(batch_size) < len(indices)
    yield batch

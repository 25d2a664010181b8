"""Feeding the train step: batches read by worker processes, and global arrays put on the
devices ahead of the step.

The train stream (pipeline.train_loader) is a random-access grain `MapDataset` of
batches: batch k is a pure function of (seed, process, k). Both iterators here keep that
as their whole state, `{"next_index": k}`, the same state grain's in-process iterator
keeps, so a run saved with one worker count resumes with any other (or none).

  ProcessBatches   batch k computed by a pool of worker processes (reads, decoding, the
                   host preprocess: everything per record), handed out in order.
  DevicePrefetch   the next batches already transferred to the devices while the current
                   step runs; it also times how long the loop waited for input.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import grain

MAX_DEFAULT_WORKERS = 16


def default_worker_count(cpus: int | None = None) -> int:
  """Loader worker processes for a host with `cpus` cores: none below 8 cores (workers
  would take the cores XLA computes on; a background thread keeps up with small images
  there), else half the cores, at most MAX_DEFAULT_WORKERS."""
  cpus = cpus if cpus is not None else (os.cpu_count() or 1)
  return 0 if cpus < 8 else min(cpus // 2, MAX_DEFAULT_WORKERS)


# The dataset a worker process serves, set once by its initializer.
_DATASET = None


def _start_worker(payload: bytes) -> None:
  global _DATASET
  _DATASET = pickle.loads(payload)


def _read(index: int) -> Any:
  return _DATASET[index]


class ProcessBatches(grain.DatasetIterator):
  """Element k of `dataset` (a grain MapDataset) for k = 0, 1, ..., computed by
  `worker_count` processes, up to `ahead` elements ahead of the consumer, in order.

  Workers are spawned, not forked (the parent runs JAX's threads), and each unpickles the
  dataset once: it must be picklable (sources, ReadBatch and the preprocess are).
  """

  def __init__(self, dataset: grain.MapDataset, worker_count: int, ahead: int | None = None):
    super().__init__()
    if worker_count < 1:
      raise ValueError(f"worker_count={worker_count} must be >= 1 (0: use grain's threads)")
    self._length = len(dataset)
    self._ahead = ahead or 2 * worker_count
    self._next = 0
    self._pending: collections.deque = collections.deque()  # results for next, next+1, ...
    context = multiprocessing.get_context("spawn")
    self._pool = context.Pool(worker_count, initializer=_start_worker,
                              initargs=(pickle.dumps(dataset),))

  def _fill(self) -> None:
    while (len(self._pending) < self._ahead
           and self._next + len(self._pending) < self._length):
      self._pending.append(self._pool.apply_async(_read, (self._next + len(self._pending),)))

  def __next__(self) -> Any:
    self._fill()
    if not self._pending:
      raise StopIteration
    element = self._pending.popleft().get()  # a worker's exception is raised here
    self._next += 1
    self._fill()
    return element

  def get_state(self) -> dict:
    return {"next_index": self._next}

  def set_state(self, state: dict) -> None:
    self._pending.clear()  # work for the old position finishes unread
    self._next = int(state["next_index"])

  def close(self) -> None:
    pool, self._pool = self._pool, None
    if pool is not None:  # grain also calls close() from __del__, possibly at exit
      pool.terminate()
      pool.join()


class DevicePrefetch(grain.DatasetIterator):
  """`to_device(batch)` of the host iterator's batches, `depth` of them in flight: the
  transfer of the next batches is dispatched before the current step has finished.

  The state is the host iterator's position after the last batch handed out (not after
  the ones in flight), so a checkpoint taken after step k resumes at batch k + 1.
  `take_wait_seconds()` returns the time spent waiting inside `next()` since its last
  call: how long the loop waited for input.
  """

  def __init__(self, host: Iterator, to_device: Callable[[Any], Any], depth: int = 2):
    super().__init__()
    self._host, self._to_device, self._depth = host, to_device, depth
    self._queue: collections.deque = collections.deque()  # (device batch, host state after it)
    self._state = host.get_state()
    self._waited = 0.0

  def __next__(self) -> Any:
    start = time.perf_counter()
    try:
      while len(self._queue) < self._depth:
        batch = next(self._host)
        self._queue.append((self._to_device(batch), self._host.get_state()))
    except StopIteration:
      if not self._queue:
        raise
    finally:
      self._waited += time.perf_counter() - start
    batch, self._state = self._queue.popleft()
    return batch

  def take_wait_seconds(self) -> float:
    waited, self._waited = self._waited, 0.0
    return waited

  def get_state(self) -> dict:
    return self._state

  def set_state(self, state: dict) -> None:
    self._queue.clear()
    self._host.set_state(state)
    self._state = state

  def start_prefetch(self) -> None:
    getattr(self._host, "start_prefetch", lambda: None)()

  def close(self) -> None:
    getattr(self._host, "close", lambda: None)()

"""ssl_jax/data/feed.py: device prefetch keeps the consumed position as its state and
times the wait; a run resumes bitwise under another loader worker count."""
import time

import jax
import numpy as np
import pytest

from ssl_jax.data import feed


class CountingIterator:
  """0, 1, 2, ... with grain's in-process state, sleeping `delay` s per element."""

  def __init__(self, delay=0.0):
    self.next_index, self.delay = 0, delay

  def __next__(self):
    time.sleep(self.delay)
    self.next_index += 1
    return np.full((2,), self.next_index - 1)

  def get_state(self):
    return {"next_index": self.next_index}

  def set_state(self, state):
    self.next_index = state["next_index"]


def test_device_prefetch_state_is_the_consumed_position():
  host = CountingIterator()
  prefetch = feed.DevicePrefetch(host, jax.device_put, depth=3)
  assert prefetch.get_state() == {"next_index": 0}
  first = [int(next(prefetch)[0]) for _ in range(2)]
  assert first == [0, 1]
  assert host.next_index == 4  # two handed out, two more already transferred
  assert prefetch.get_state() == {"next_index": 2}
  prefetch.set_state({"next_index": 7})
  assert [int(next(prefetch)[0]) for _ in range(2)] == [7, 8]
  assert prefetch.get_state() == {"next_index": 9}


def test_device_prefetch_ends_with_its_host_and_times_the_wait():
  class Finite(CountingIterator):
    def __next__(self):
      if self.next_index == 3:
        raise StopIteration
      return super().__next__()
  prefetch = feed.DevicePrefetch(Finite(delay=0.05), jax.device_put, depth=2)
  assert [int(b[0]) for b in prefetch] == [0, 1, 2]
  assert prefetch.take_wait_seconds() >= 3 * 0.05
  assert prefetch.take_wait_seconds() == 0.0  # taken: the window starts again


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 0), (7, 0), (8, 4), (16, 8), (96, 16)])
def test_default_worker_count(cpus, workers):
  assert feed.default_worker_count(cpus) == workers


def test_run_resumes_bitwise_under_another_worker_count(tiny_data_dir, tmp_path, capfd):
  """Steps 1-2 read by a worker process, 3-4 by the trainer's own threads after a
  resume: the same parameters as 4 uninterrupted steps without workers."""
  from ssl_jax import train
  from ssl_jax.core import parallel
  from train_worker import flatten, tiny_config
  config = tiny_config(tiny_data_dir, total_steps=4)
  config.async_checkpointing = False
  config.loader_workers = 0
  whole = train.train(config, str(tmp_path / "whole"))
  config.loader_workers = 1
  train.train(config, str(tmp_path / "split"), stop_at_step=2)
  config.loader_workers = 0  # a field a resumed run may change
  split = train.train(config, str(tmp_path / "split"))
  assert "resumed from" in capfd.readouterr().err
  want, got = (flatten(parallel.to_host(s.params)) for s in (whole, split))
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  import json
  logged = [json.loads(line) for line in open(tmp_path / "split" / "metrics.jsonl")]
  waits = [r["input_wait_fraction"] for r in logged if "input_wait_fraction" in r]
  assert len(waits) == 4 and all(0 <= w <= 1 for w in waits)

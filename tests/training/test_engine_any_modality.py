"""The engine knows no modality: a test-only method on a dataset of vectors (no image
anywhere) trains, resumes bitwise and evaluates through the same trainer and evaluator."""
import json

import ml_collections
import numpy as np
import pytest

import toy_vectors
from ssl_jax import evals, evaluate, train
from ssl_jax.core import parallel
from ssl_jax.data import prepare
from ssl_jax.training import optim
from train_worker import flatten


@pytest.fixture(scope="module")
def vector_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("toy_vectors"))
  prepare.prepare("toy_vectors", data_dir)
  return data_dir


def vector_config(data_dir, total_steps=6):
  import toy_vector_method
  config = train.default_config()
  config.method = "toy_vector_method"  # a method outside the package, by module path
  config.global_batch_size = 32
  config.total_steps = total_steps
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.async_checkpointing = False
  config.data = ml_collections.ConfigDict(dict(
      name="toy_vectors", data_dir=data_dir, train_split="train", features=("vector", "label"),
      label_key="label", modality="vector", input_key="vector"))
  config.toy = toy_vector_method.default_config()
  config.optimizer = optim.default_config(name="adamw", learning_rate=1e-2, lr_scaling="none",
                                          warmup_steps=1)
  config.eval = evals.default_config(batch_size=32, monitor_every_steps=3,
                                        monitor_train_split="train", monitor_test_split="test")
  config.eval.linear.epochs = 3
  config.eval.linear.batch_size = 64
  return config


def _values(state):
  return flatten(parallel.to_host((state.params, state.method_state, state.opt_state)))


def test_vector_method_trains_resumes_and_evaluates(vector_data_dir, tmp_path):
  full = train.train(vector_config(vector_data_dir), str(tmp_path / "full"))
  assert int(full.step) == 6 and int(full.method_state["updates_seen"]) == 6
  train.train(vector_config(vector_data_dir), str(tmp_path / "split"), stop_at_step=4)
  resumed = train.train(vector_config(vector_data_dir), str(tmp_path / "split"))
  for name, value in _values(full).items():
    np.testing.assert_array_equal(_values(resumed)[name], value, err_msg=name)

  records = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
  steps_seen = [r["step_seen"] for r in records if "step_seen" in r]
  assert steps_seen == [0, 1, 2, 3, 4, 5]  # update gets the step before the increment
  assert any("knn_top1" in r for r in records)  # the in-loop monitor ran on vectors

  reports = evaluate.run(str(tmp_path / "full"), ["knn", "linear"])
  vectors, labels = toy_vectors.make_split("train")
  test_vectors, test_labels = toy_vectors.make_split("test")
  for mode, report in reports.items():
    assert report["protocol"]["baselines"]["raw_input"].startswith("vector")
    # Gaussian clusters 2 sigma apart: the raw vectors are easy; both probes see that.
    assert report["baselines"]["raw_input"] > 0.8, (mode, report)
  # The raw-input baseline is the vectors themselves: a nearest-centroid check by hand.
  centroids = np.stack([vectors[labels == c].mean(0) for c in range(toy_vectors.CLASSES)])
  by_hand = np.mean(np.argmin(((test_vectors[:, None] - centroids) ** 2).sum(-1), 1) == test_labels)
  assert abs(reports["linear"]["baselines"]["raw_input"] - by_hand) < 0.1

"""The method contract, checked for every method in `methods.available()` with no edit
here when one is added: its experiment has a smoke config; the real jitted train step
on 8 simulated devices equals 1 device (loss, gradients, method_state); a run stopped
and resumed equals the uninterrupted run bitwise."""
import importlib
import json

import numpy as np
import pytest

from ssl_jax import methods
from test_train import _params, assert_same_step, run_worker

METHODS = methods.available()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache_contract")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_an_experiment_with_a_smoke_config(method):
  module = importlib.import_module(f"experiments.{method}")
  config = module.get_config("fashion_mnist,smoke")
  assert config.method == method and config.total_steps <= 5
  for name in ("default_config", "init", "views", "loss", "update", "encode"):
    assert callable(getattr(methods.get(method), name)), name


@pytest.mark.parametrize("method", METHODS)
def test_eight_devices_match_one_device(method, tiny_data_dir, tmp_path, cache):
  one, _ = run_worker("one_step", tiny_data_dir, tmp_path / "one.npz", cache, devices=1,
                      method=method)
  eight, _ = run_worker("one_step", tiny_data_dir, tmp_path / "eight.npz", cache, devices=8,
                        method=method)
  assert_same_step(eight, one)


@pytest.mark.parametrize("method", METHODS)
def test_resume_is_bitwise(method, tiny_data_dir, tmp_path, cache):
  full, _ = run_worker("train", tiny_data_dir, tmp_path / "full.npz", cache,
                       workdir=tmp_path / "full", steps=4, method=method)
  run_worker("train", tiny_data_dir, tmp_path / "half.npz", cache, workdir=tmp_path / "split",
             steps=4, stop_at=2, method=method)
  resumed, log = run_worker("train", tiny_data_dir, tmp_path / "resumed.npz", cache,
                            workdir=tmp_path / "split", steps=4, method=method)
  assert "resumed from" in log and "at step 2" in log
  assert int(full["step"]) == int(resumed["step"]) == 4
  values = _params(full)
  assert any(k.startswith("method_state") for k in values)
  for name, value in values.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  # The resumed run appended to the same metrics file: steps 1..4 once each.
  steps = [json.loads(line)["step"] for line in open(tmp_path / "split" / "metrics.jsonl")
           if "loss" in line]
  assert steps == [1, 2, 3, 4]

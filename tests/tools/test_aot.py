"""`python -m ssl_jax.tools.aot`: a config's real train step compiled for a TPU slice on this
CPU host, with libtpu's compiler (the test extra installs it; without it the compiling
tests skip and say so)."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import simclr
from ssl_jax.core import parallel
from ssl_jax.data import modality
from ssl_jax.models import onednn
from ssl_jax.methods import colorization
from ssl_jax.tools import aot, tpu
from ssl_jax.training import engine

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason=f"libtpu (the TPU compiler) is not installed: {tpu.TPU_INSTALL}, or the test extra")


def smoke_config(**fields):
  config = simclr.get_config("fashion_mnist,smoke")
  for name, value in fields.items():
    section, _, field = name.rpartition(".")
    target = config[section] if section else config
    with target.unlocked():
      target[field] = value
  return config


@pytest.mark.parametrize("topology, message", [
    ("v5e", "expected KIND:LAYOUT"),
    ("v9x:2x2", "unknown TPU kind 'v9x'"),
    ("v5e:2x2:1", "expected KIND:LAYOUT"),
])
def test_a_malformed_or_unknown_topology_is_named(topology, message):
  with pytest.raises(tpu.TopologyError, match=message):
    tpu.devices(topology)


def test_chip_counts_follow_the_layout():
  assert tpu.parse("v5e:8x8")[2] == 64
  assert tpu.parse("v4:4x4x4")[2] == 64
  assert tpu.parse("v6e:2x4")[1].hbm_gib == 32


def test_a_missing_libtpu_names_the_install_command(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "libtpu" else real(name, *a))
  with pytest.raises(tpu.TopologyError, match=r'pip install -e "\.\[tpu\]"'):
    tpu.devices("v5e:2x2")


@needs_libtpu
def test_a_layout_libtpu_refuses_is_one_error():
  with pytest.raises(tpu.TopologyError, match="libtpu cannot build it"):
    tpu.devices("v5e:3x3")


@needs_libtpu
def test_every_kind_gives_one_device_per_chip_of_its_datasheets_kind():
  for topology, chips in (("v4:2x2x1", 4), ("v5p:2x2x1", 4), ("v5e:2x4", 8), ("v6e:2x2", 4)):
    chip, devices = tpu.devices(topology)
    assert len(devices) == chips and devices[0].platform == "tpu"
    assert devices[0].device_kind == chip.device_kind


def _lowered_step_text(config, devices) -> str:
  mesh = parallel.make_mesh(config.sharding.fsdp, devices)
  example = modality.placeholder_example(config.data)
  _, init, step = engine.build(config, mesh, example)
  state = jax.eval_shape(init, jax.random.PRNGKey(0))
  return step.lower(state, aot._batch(example, config.global_batch_size, mesh)).as_text()


@needs_libtpu
def test_the_cpu_convolution_strategy_stays_out_of_the_tpu_program():
  # On this CPU host, "auto" means "onednn" (or "fast" without it) for a one-device CPU
  # mesh; traced for TPU chips it must be exactly the explicit "xla" program, and differ
  # from the CPU strategy's.
  _, devices = tpu.devices("v5e:2x2")
  auto = _lowered_step_text(smoke_config(), devices)
  assert auto == _lowered_step_text(smoke_config(**{"model.conv_impl": "xla"}), devices)
  assert auto != _lowered_step_text(smoke_config(**{"model.conv_impl": "fast"}), devices)
  host = _lowered_step_text(smoke_config(), jax.devices()[:1])
  on_cpu = "onednn" if onednn.available() else "fast"
  assert host == _lowered_step_text(smoke_config(**{"model.conv_impl": on_cpu}),
                                    jax.devices()[:1])
  assert "ssl_jax_onednn_conv" not in auto


@needs_libtpu
def test_colorization_targets_read_a_few_kilobytes_per_pixel_on_a_tpu():
  # Gathering each pixel's 25 candidate bins one index at a time from a 2-D table cost
  # 553 KB accessed per pixel in libtpu's cost analysis (the ImageNet row's step 472 GB per
  # chip); one row of 25 per pixel costs 12-15 KB.
  _, devices = tpu.devices("v5e:2x2")
  ab = jax.ShapeDtypeStruct((2, 64, 64, 2), np.float32,
                            sharding=jax.sharding.SingleDeviceSharding(devices[0]))
  compiled = jax.jit(lambda x: colorization.soft_encode_cells(x, 10.0, 5.0, 4)).lower(ab).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert cost["bytes accessed"] / (2 * 64 * 64) < 50e3, cost["bytes accessed"]


@needs_libtpu
def test_the_compiled_step_holds_the_state_and_fsdp_splits_it():
  chip, devices = tpu.devices("v5e:2x2")
  replicated = aot.compile_train_step(smoke_config(), chip, devices, progress=lambda _: None)
  split = aot.compile_train_step(smoke_config(**{"sharding.fsdp": 4, "sharding.min_size": 1}),
                                 chip, devices, progress=lambda _: None)
  # The compiler's arguments are the state and this chip's rows of the batch: at least
  # the state's bytes (TPU tiles pad small leaves up), and FSDP over 4 chips cuts them.
  batch_bytes = 16 // 4 * (28 * 28 + 4)
  assert replicated["argument_bytes"] >= replicated["state_bytes"] + batch_bytes
  assert split["state_bytes"] < replicated["state_bytes"] / 2
  assert split["argument_bytes"] < replicated["argument_bytes"]
  assert replicated["fits"] and replicated["total_bytes"] < 2**30
  # The roofline is the slower of compute and memory at the datasheet's rates.
  expected = max(replicated["flops_per_chip"] / 197e12, replicated["bytes_accessed_per_chip"] /
                 819e9)
  np.testing.assert_allclose(replicated["roofline_s"], expected, rtol=1e-12)
  # Per chip: the compiled matmul work of 4 chips is the model's (elementwise work adds).
  assert replicated["flops_per_chip"] * 4 > 0.5 * replicated["model_flops"]


@needs_libtpu
def test_a_batch_the_chips_do_not_divide_is_one_error():
  chip, devices = tpu.devices("v5e:2x4")
  with pytest.raises(Exception, match="multiple of the device count"):
    aot.compile_train_step(smoke_config(global_batch_size=12), chip, devices,
                           progress=lambda _: None)


def _run(*args):
  return subprocess.run([sys.executable, "-m", "ssl_jax.tools.aot", *args],
                        capture_output=True, text=True, timeout=300,
                        env={k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"})


@needs_libtpu
def test_the_command_prints_a_json_line_and_a_table_without_libtpu_noise():
  result = _run("--config=experiments/simclr.py:fashion_mnist,smoke", "--topology=v5e:2x2",
                "--noeval")
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.splitlines()[0])
  assert report["chips"] == 4 and report["train"]["fits"] and "eval" not in report
  assert any(line.startswith("train ") for line in result.stdout.splitlines()[1:])
  assert "E0000" not in result.stderr and "WARNING" not in result.stderr, result.stderr


@needs_libtpu
def test_a_config_that_does_not_fit_says_so():
  # A million 28x28 images a step: the TPU compiler refuses to allocate the temporaries.
  result = _run("--config=experiments/simclr.py:fashion_mnist,smoke", "--topology=v5e:2x2",
                "--config.global_batch_size=1048576", "--noeval")
  assert result.returncode == 0, result.stderr
  train = json.loads(result.stdout.splitlines()[0])["train"]
  assert train["fits"] is False and "RESOURCE_EXHAUSTED" in train["out_of_memory"]
  assert train["required_temp_bytes"] > train["hbm_bytes"]
  assert "does not fit" in result.stdout and " NO " in result.stdout


def test_a_bad_topology_on_the_command_line_is_one_error_line():
  result = _run("--config=experiments/simclr.py:fashion_mnist,smoke", "--topology=v5e")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: --topology='v5e'")
  assert "Traceback" not in result.stderr


def test_an_accelerator_free_host_with_libtpu_starts_jax_quietly():
  # ssl_jax keeps jax off a TPU runtime that is installed but has no chip here.
  result = subprocess.run(
      [sys.executable, "-c", "import ssl_jax, jax; print(jax.default_backend())"],
      capture_output=True, text=True, timeout=120,
      env={k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"})
  assert result.stdout.strip() == "cpu" and result.stderr == "", result.stderr

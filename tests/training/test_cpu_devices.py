"""How a CPU host is split into devices (ssl_jax/training/cpu_devices.py): the choice
against hand-worked cases, and the count a fresh process really gets."""
import os
import subprocess
import sys
import textwrap

import pytest

from experiments import clip, mae, mlm, simclr
from ssl_jax import train
from ssl_jax.core.errors import ConfigError
from ssl_jax.training import cpu_devices

ON_CPU = {"JAX_PLATFORMS": "cpu"}


def _config(experiment, **fields):
  config = experiment.get_config("")
  for name, value in fields.items():
    section, _, field = name.rpartition(".")
    (config[section] if section else config)[field] = value
  return config


@pytest.mark.parametrize("experiment", [mae, mlm], ids=["vit", "transformer"])
def test_a_transformer_takes_one_device_per_core(experiment):
  config = _config(experiment, global_batch_size=24)
  assert cpu_devices.choose(config, 2, ON_CPU)[0] == 2
  assert cpu_devices.choose(config, 4, ON_CPU)[0] == 4
  # The largest count up to the cores that divides the batch: 24 over 5 cores -> 4.
  assert cpu_devices.choose(config, 5, ON_CPU)[0] == 4
  assert cpu_devices.choose(config, 1, ON_CPU)[0] is None
  # With micro-batches, each of them is what the devices share: 24 / 2 = 12 over 8 -> 6.
  accumulated = _config(experiment, global_batch_size=24, grad_accumulation=2)
  assert cpu_devices.choose(accumulated, 8, ON_CPU)[0] == 6
  # At most 8 by default, whatever the cores: 64 cores, batch 256 -> 8.
  assert cpu_devices.choose(_config(experiment, global_batch_size=256), 64, ON_CPU)[0] == 8
  # A batch of 7 divides over no count but one: jax's own single device.
  assert cpu_devices.choose(_config(experiment, global_batch_size=7), 4, ON_CPU)[0] is None


def test_a_convolutional_backbone_keeps_one_device():
  assert cpu_devices.choose(_config(simclr), 2, ON_CPU)[0] is None
  # CLIP's image tower is a ResNet: one device, though its text tower is a transformer.
  config = _config(clip)
  assert config.model.name == "resnet" and config.text_model.name == "transformer"
  assert cpu_devices.choose(config, 2, ON_CPU)[0] is None


def test_an_explicit_count_is_taken_as_asked():
  assert cpu_devices.choose(_config(simclr, **{"sharding.cpu_devices": 3}), 2, ON_CPU)[0] == 3
  # ... even off the CPU, where it only shapes jax's CPU backend.
  vit = _config(mae, **{"sharding.cpu_devices": 1})
  assert cpu_devices.choose(vit, 2, {"JAX_PLATFORMS": "cuda"})[0] == 1


@pytest.mark.parametrize("environ, user_count", [
    ({**ON_CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, -1),
    (ON_CPU, 8),                                                   # JAX_NUM_CPU_DEVICES
    ({"JAX_PLATFORMS": "cuda,cpu"}, -1),
    ({**ON_CPU, "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"}, -1),
    ({**ON_CPU, "SSL_JAX_DISTRIBUTED": "1"}, -1),
], ids=["xla_flags", "jax_config", "gpu", "multihost", "pod"])
def test_the_default_leaves_a_count_it_does_not_own(environ, user_count):
  assert cpu_devices.choose(_config(mae), 2, environ, user_count)[0] is None


def test_fsdp_keeps_its_own_mesh():
  assert cpu_devices.choose(_config(mae, **{"sharding.fsdp": -1}), 2, ON_CPU)[0] is None


def test_an_accelerator_on_the_host_means_not_on_the_cpu(tmp_path, monkeypatch):
  assert cpu_devices.runs_on_cpu({"JAX_PLATFORMS": "cpu"})
  assert not cpu_devices.runs_on_cpu({"JAX_PLATFORMS": "tpu"})
  (tmp_path / "nvidia0").touch()
  monkeypatch.setattr(cpu_devices, "ACCELERATOR_DEVICE_FILES", (str(tmp_path / "nvidia*"),))
  assert not cpu_devices.runs_on_cpu({})
  assert cpu_devices.runs_on_cpu({"JAX_PLATFORMS": "cpu"})  # the user's word wins
  monkeypatch.setattr(cpu_devices, "ACCELERATOR_DEVICE_FILES", (str(tmp_path / "accel*"),))
  assert cpu_devices.runs_on_cpu({})


def test_a_negative_count_is_a_config_error():
  with pytest.raises(ConfigError, match="sharding.cpu_devices"):
    train.check(_config(mae, **{"sharding.cpu_devices": -1}))


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import ssl_jax
    from experiments import mae, simclr
    from ssl_jax.training import cpu_devices
    config = {"mae": mae, "simclr": simclr}[sys.argv[1]].get_config("")
    config.global_batch_size = int(sys.argv[2])
    if len(sys.argv) > 3:
      config.sharding.cpu_devices = int(sys.argv[3])
    cpu_devices.apply(config)
    import jax
    print("devices", jax.device_count())
    if len(sys.argv) > 4:  # once jax has started, an explicit count it lacks is an error
      config.sharding.cpu_devices = int(sys.argv[4])
      cpu_devices.apply(config)
""")


def _fresh(*args, xla_flags=""):
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith(cpu_devices.FLAG))
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES",)}
  env.update(XLA_FLAGS=f"{flags} {xla_flags}".strip(), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", FRESH_PROCESS, *map(str, args)], env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def test_a_fresh_process_gets_the_count():
  cores = len(os.sched_getaffinity(0))
  batch = 12
  want = max(d for d in range(1, min(cores, 8) + 1) if batch % d == 0)  # as documented
  vit = _fresh("mae", batch)
  assert vit.returncode == 0, vit.stderr[-3000:]
  assert f"devices {want}" in vit.stdout
  assert (f"CPU: {want} devices" in vit.stderr) == (want > 1)
  resnet = _fresh("simclr", batch)
  assert "devices 1" in resnet.stdout and "CPU:" not in resnet.stderr, resnet.stderr[-3000:]
  asked = _fresh("simclr", batch, 3)
  assert "devices 3" in asked.stdout and "CPU: 3 devices (sharding.cpu_devices=3" in asked.stderr
  # A count the user gave XLA stays.
  given = _fresh("mae", batch, xla_flags=f"{cpu_devices.FLAG}=3")
  assert "devices 3" in given.stdout, given.stderr[-3000:]


def test_an_explicit_count_after_jax_started_is_refused():
  same = _fresh("simclr", 8, 2, 2)  # asks again for what it has: fine
  assert same.returncode == 0 and "devices 2" in same.stdout, same.stderr[-3000:]
  other = _fresh("simclr", 8, 2, 4)
  assert other.returncode != 0 and "sharding.cpu_devices=4" in other.stderr
  assert "jax started with 2 CPU device(s)" in other.stderr

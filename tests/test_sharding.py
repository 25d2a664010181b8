"""FSDP (ssl_jax/sharding.py): the layout rules by hand, and on 8 simulated devices
(tests/fsdp_worker.py) the same results as the replicated layout, a run that resumes
across layouts and a checkpoint that restores onto another device count."""
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax import resume, sharding, train
from ssl_jax.validate import ConfigError
from compare import relative_gap
from test_train import ROOT, _env


def _layout(**fields):
  config = sharding.default_config()
  config.update(fields)
  return config


def test_the_largest_divisible_axis_is_split():
  assert sharding.leaf_spec((3, 3, 64, 128), "fsdp", 8, 0) == P(None, None, None, "fsdp")
  assert sharding.leaf_spec((512, 100), "fsdp", 4, 0) == P("fsdp")
  assert sharding.leaf_spec((102, 12), "fsdp", 4, 0) == P(None, "fsdp")   # 4 does not divide 102
  assert sharding.leaf_spec((64, 64), "fsdp", 8, 0) == P(None, "fsdp")    # a tie: the later axis
  assert sharding.leaf_spec((7, 9), "fsdp", 4, 0) == P()                  # none divisible
  assert sharding.leaf_spec((4096,), "fsdp", 4, 2**14) == P()             # below min_size
  assert sharding.leaf_spec((512, 512), "replicate", 4, 0) == P()
  assert sharding.leaf_spec((512, 512), "fsdp", 1, 0) == P()


def test_rules_match_paths_in_order_and_unused_rules_are_errors():
  mesh = jax.make_mesh((1, 1), ("data", "fsdp"))
  abstract = {"params": {"embed": jax.ShapeDtypeStruct((64, 32), np.float32),
                         "dense": jax.ShapeDtypeStruct((64, 32), np.float32)}}
  # A 1-device fsdp axis splits nothing; the rules are still matched and checked.
  sharding.state_shardings(abstract, mesh, _layout(rules=(("embed", "replicate"),)))
  with pytest.raises(ConfigError, match="match no leaf"):
    sharding.state_shardings(abstract, mesh, _layout(rules=(("embbed", "replicate"),)))
  with pytest.raises(ConfigError, match="strategy 'shard'"):
    sharding.check_rules(_layout(rules=(("embed", "shard"),)))
  with pytest.raises(ConfigError, match="bad regex"):
    sharding.check_rules(_layout(rules=(("embed[", "fsdp"),)))


def test_fsdp_size_must_divide_the_devices():
  assert sharding.fsdp_size(_layout(fsdp=-1), 8) == 8
  assert sharding.fsdp_size(_layout(fsdp=2), 8) == 2
  for bad in (3, 0, -2):
    with pytest.raises(ConfigError, match="sharding.fsdp"):
      sharding.fsdp_size(_layout(fsdp=bad), 8)


def test_the_layout_may_change_on_resume(tmp_path):
  config = train.default_config()
  (tmp_path / "config.json").write_text(config.to_json())
  config.sharding.fsdp = 8
  notes = []
  resume.check_config(config, str(tmp_path), notes.append)
  assert notes == ["resuming with sharding.fsdp changed: 1 -> 8"]


@pytest.fixture(scope="module")
def fsdp_run(tiny_data_dir, tmp_path_factory):
  path = tmp_path_factory.mktemp("fsdp")
  result = subprocess.run(
      [sys.executable, f"{ROOT}/tests/fsdp_worker.py", "--data_dir", tiny_data_dir,
       "--workdir", str(path), "--out", str(path / "out.npz")],
      env=_env(tmp_path_factory.mktemp("fsdp_cache")), capture_output=True, text=True,
      timeout=900)
  assert result.returncode == 0, result.stdout + result.stderr[-6000:]
  return dict(np.load(path / "out.npz"))


def _tree(result, prefix):
  return {k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)}


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_fsdp_equals_replicated(fsdp_run, method):
  """Three steps from the same init on a 2x4 (data, fsdp) mesh and replicated on 8."""
  assert fsdp_run[f"{method}/split_leaves"] >= 10
  fsdp_bytes = int(fsdp_run[f"{method}/fsdp/bytes_per_device"])
  replicated_bytes = int(fsdp_run[f"{method}/replicated/bytes_per_device"])
  assert fsdp_bytes < 0.5 * replicated_bytes, (fsdp_bytes, replicated_bytes)
  np.testing.assert_allclose(fsdp_run[f"{method}/fsdp/loss"],
                             fsdp_run[f"{method}/replicated/loss"], rtol=1e-5)
  got, want = _tree(fsdp_run, f"{method}/fsdp/state"), _tree(fsdp_run, f"{method}/replicated/state")
  assert set(got) == set(want) and any(".params" in k for k in want)
  floats = [k for k in want if np.issubdtype(want[k].dtype, np.floating)]
  # An attention key bias has a zero gradient in exact arithmetic (softmax ignores a shift
  # common to every key's score), so AdamW moves it by rounding noise over its own root
  # mean square: up to a learning rate in any direction, in either layout.
  noise = [k for k in floats if k.startswith(".params") and "['key']['bias']" in k]
  assert len(noise) == (2 if method == "mae" else 0)  # MAE's encoder and decoder block
  compared = [k for k in floats if k not in noise]
  # Float32 sums in another order; a wrong gather or a per-shard update is O(1).
  assert relative_gap([got[k] for k in compared], [want[k] for k in compared]) < 1e-4
  for name in set(want) - set(floats):  # step, rng
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_run_resumes_across_layouts_and_device_counts(fsdp_run):
  """Stopped after 2 of 3 fsdp=8 steps, resumed replicated: the step it restores is
  bitwise the saved one (checked onto 4 devices below), so the last step differs from
  the uninterrupted run's only by one step's float32 rounding. Not more steps: this tiny
  ResNet under LARS amplifies rounding about 30x every two steps (1 device against 8,
  both replicated, differ by 1.5e-5 after 2 steps and 3.6e-3 after 4)."""
  resumed, uninterrupted = _tree(fsdp_run, "trainer/resumed"), _tree(fsdp_run, "trainer/uninterrupted")
  params = [k for k in uninterrupted if k.startswith(".params")]
  assert params and int(resumed[".step"]) == int(uninterrupted[".step"]) == 3
  # A wrong data position or a bad restore moves the parameters by O(0.1) of their scale.
  assert relative_gap([resumed[k] for k in params], [uninterrupted[k] for k in params]) < 1e-4
  # The fsdp=8 checkpoint restored onto 4 devices (fsdp=2): bitwise, in the new layout.
  assert bool(fsdp_run["trainer/restored_layout_ok"])
  saved, restored = _tree(fsdp_run, "trainer/at_2"), _tree(fsdp_run, "trainer/restored_4_devices")
  assert set(saved) == set(restored)
  for name, value in saved.items():
    np.testing.assert_array_equal(restored[name], value, err_msg=name)

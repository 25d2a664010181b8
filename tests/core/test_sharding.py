"""FSDP (ssl_jax/core/sharding.py): the layout rules by hand, and on 8 simulated devices
(tests/helpers/fsdp_worker.py) one step equal to the replicated layout's within its measured
rounding, a run that resumes across layouts bitwise, a checkpoint that restores onto
another device count, and the same comparisons failing on injected faults."""
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_jax import train
from ssl_jax.core import parallel, sharding
from ssl_jax.core.errors import ConfigError
from ssl_jax.training import resume
import compare
from workers import FSDP_WORKER, worker_env


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
  assert parallel.fsdp_size(-1, 8) == 8
  assert parallel.fsdp_size(2, 8) == 2
  for bad in (3, 0, -2):
    with pytest.raises(ConfigError, match="sharding.fsdp"):
      parallel.fsdp_size(bad, 8)


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
      [sys.executable, FSDP_WORKER, "--data_dir", tiny_data_dir,
       "--workdir", str(path), "--out", str(path / "out.npz")],
      env=worker_env(tmp_path_factory.mktemp("fsdp_cache")), capture_output=True, text=True,
      timeout=900)
  assert result.returncode == 0, result.stdout + result.stderr[-6000:]
  return dict(np.load(path / "out.npz"))


def _tree(result, prefix):
  return {k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)}


def _changes(result, method, name):
  """{leaf: change over the step} of one computation, the zero-gradient leaves left out
  (compare.ZERO_GRADIENT_LEAVES: AdamW moves them by rounding noise in any layout)."""
  tree = _tree(result, f"{method}/{name}/")
  return {k: v for k, v in tree.items() if not k.endswith(compare.ZERO_GRADIENT_LEAVES)}


def _probes(result, method):
  return [_changes(result, method, f"probe{i}") for i in range(2)]


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_fsdp_equals_replicated(fsdp_run, method):
  """One step from a shared state on a 2x4 (data, fsdp) mesh and replicated on 8: every
  leaf's change within the replicated step's own measured rounding sensitivity."""
  assert fsdp_run[f"{method}/split_leaves"] >= 10
  fsdp_bytes = int(fsdp_run[f"{method}/bytes_per_device/fsdp"])
  replicated_bytes = int(fsdp_run[f"{method}/bytes_per_device/replicated"])
  assert fsdp_bytes < 0.5 * replicated_bytes, (fsdp_bytes, replicated_bytes)
  want = _changes(fsdp_run, method, "replicated")
  assert any(k.startswith(".params") for k in want) and any(k.startswith(".opt_state") for k in want)
  # Every parameter moved: the learning rate and the momentum are not zero at this step.
  assert all(np.abs(v).max() > 0 for k, v in want.items() if k.startswith(".params"))
  compare.assert_close(_changes(fsdp_run, method, "fsdp"), want, _probes(fsdp_run, method),
                       judged=compare.parameters_excluded)


@pytest.mark.parametrize("fault", ["simclr/wrong_gather", "simclr/per_shard_update",
                                   "mae/wrong_gather"])
def test_the_layout_comparison_sees_faults(fsdp_run, fault):
  """The same step computed wrongly on purpose: the largest split parameter gathered with
  its shards in the wrong order, or LARS's trust ratios from each shard's own norms."""
  method = fault.split("/")[0]
  compare.assert_fault_seen(_changes(fsdp_run, method, fault.split("/")[1]),
                            _changes(fsdp_run, method, "replicated"), _probes(fsdp_run, method))


def test_a_run_resumes_across_layouts_and_device_counts(fsdp_run):
  """Stopped after 2 of 3 fsdp=8 steps and resumed replicated: bitwise the state it
  stopped at advanced by the replicated step on the stream's third batch. The fsdp=8
  checkpoint of step 2 restores onto 4 devices (fsdp=2) bitwise, in the new layout."""
  resumed, replayed = _tree(fsdp_run, "trainer/resumed"), _tree(fsdp_run, "trainer/replayed")
  assert set(resumed) == set(replayed) and any(k.startswith(".opt_state") for k in replayed)
  assert int(resumed[".step"]) == int(replayed[".step"]) == 3
  for name, value in replayed.items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
  assert bool(fsdp_run["trainer/restored_layout_ok"])
  saved, restored = _tree(fsdp_run, "trainer/at_2"), _tree(fsdp_run, "trainer/restored_4_devices")
  assert set(saved) == set(restored)
  for name, value in saved.items():
    np.testing.assert_array_equal(restored[name], value, err_msg=name)


@pytest.mark.parametrize("fault", ["wrong_position", "bad_restore"])
def test_the_resume_comparison_sees_faults(fsdp_run, fault):
  """The resume with its data stream one batch late, or its momentum not restored: the
  last step's change is off by far more than rounding, not only in the last bit."""
  at_2 = _tree(fsdp_run, "trainer/at_2")
  faulty = compare.float_changes(_tree(fsdp_run, f"trainer/{fault}"), at_2)
  want = compare.float_changes(_tree(fsdp_run, "trainer/replayed"), at_2)
  params = lambda tree: {k: v for k, v in tree.items() if k.startswith(".params")}
  assert compare.relative_gap(params(faulty), params(want)) > 1e-2

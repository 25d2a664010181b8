"""Multi-host: two JAX processes on 127.0.0.1 (2 simulated CPU devices each) form one
4-device mesh, as two hosts of a pod slice would. Checked: a step over the two processes
equals the same global batch on one process; a two-process run resumed from a
checkpoint equals an uninterrupted one bitwise (train state and each process's grain
position), with the state replicated and with it split over both hosts (FSDP); SIGTERM
delivered to one host makes both save and exit, and the resumed run is still exact; evaluation
features extracted by both processes (each reading its own shard, padded to equal batch
counts) are those one process extracts."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from compare import assert_same_step
from rundirs import rewound_copy
from workers import WORKER, model_fields, run_worker, worker_env

PROCESSES = 2
DEVICES_PER_PROCESS = 2
STEPS = 8


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_job(mode, data_dir, out, cache, **kwargs):
  """Starts the processes of one job; returns their Popen handles."""
  coordinator = f"127.0.0.1:{_free_port()}"
  processes = []
  for process_id in range(PROCESSES):
    command = [sys.executable, WORKER, mode, "--devices", str(DEVICES_PER_PROCESS),
               "--data_dir", data_dir, "--out", str(out), "--num_processes", str(PROCESSES),
               "--process_id", str(process_id), "--coordinator", coordinator]
    for key, value in kwargs.items():
      command += [f"--{key}", str(value)]
    processes.append(subprocess.Popen(command, env=worker_env(cache), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
  return processes


def finish_job(processes, out):
  """Waits for every process; returns the output of each (as loaded npz dicts) and stderr."""
  logs = []
  try:
    for process in processes:
      _, stderr = process.communicate(timeout=600)
      logs.append(stderr)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  for process_id, (process, stderr) in enumerate(zip(processes, logs)):
    assert process.returncode == 0, f"process {process_id}:\n{stderr}"
  root, suffix = os.path.splitext(str(out))
  results = [dict(np.load(f"{root}.p{i}{suffix}")) for i in range(PROCESSES)]
  return results, logs


def run_job(mode, data_dir, out, cache, **kwargs):
  return finish_job(start_job(mode, data_dir, out, cache, **kwargs), out)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache_multihost")


@pytest.fixture(scope="module")
def uninterrupted(tiny_data_dir, tmp_path_factory, cache):
  """A two-process run of STEPS steps, never stopped: the reference for resumes."""
  path = tmp_path_factory.mktemp("uninterrupted")
  (first, second), _ = run_job("train", tiny_data_dir, path / "full.npz", cache,
                               workdir=path / "work", steps=STEPS)
  return first, second, path / "work"


@pytest.mark.xdist_group("multihost_jobs")
def test_two_processes_match_one_process(tiny_data_dir, tmp_path, cache):
  single, _ = run_worker("one_step", tiny_data_dir, tmp_path / "single.npz", cache,
                         devices=PROCESSES * DEVICES_PER_PROCESS)
  (first, second), _ = run_job("one_step", tiny_data_dir, tmp_path / "multi.npz", cache)
  for name in single:
    # Both processes hold the same (gathered) values.
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
  assert_same_step(first, single)


@pytest.mark.xdist_group("multihost_uninterrupted")
def test_two_process_run_is_replicated_and_sharded(uninterrupted):
  first, second, workdir = uninterrupted
  assert int(first["step"]) == int(second["step"]) == STEPS
  for name, value in model_fields(first).items():
    np.testing.assert_array_equal(second[name], value, err_msg=name)
  # Each process checkpointed its own position in its own shard of the data.
  data_dirs = list((workdir / "checkpoints").glob(f"{STEPS}/data"))
  assert data_dirs, list((workdir / "checkpoints").iterdir())
  files = sorted(p.name for p in data_dirs[0].iterdir() if p.name.startswith("process_"))
  assert files == [f"process_{i}-of-{PROCESSES}.json" for i in range(PROCESSES)], files


@pytest.mark.xdist_group("multihost_uninterrupted")
def test_damage_seen_by_one_host_makes_both_fall_back(tiny_data_dir, tmp_path, cache, uninterrupted):
  """Only process 1's data-iterator state of the newest step (the last, STEPS) is damaged:
  process 0 restores that step fine, yet both must agree to fall back to the previous step
  and train the last two steps again, to the same weights."""
  full, _, finished = uninterrupted
  workdir = tmp_path / "damaged"
  shutil.copytree(finished, workdir)
  newest = workdir / "checkpoints" / str(STEPS)
  (newest / "data" / f"process_1-of-{PROCESSES}.json").write_text('{"not": "a grain state"}')
  (resumed, second), logs = run_job("train", tiny_data_dir, tmp_path / "resumed.npz", cache,
                                    workdir=workdir, steps=STEPS)
  assert f"checkpoint step {STEPS} is damaged" in logs[0], logs[0]
  assert f"at step {STEPS - 2}" in logs[0]
  assert (workdir / "checkpoints" / f"corrupt-{STEPS}").is_dir()
  for name, value in model_fields(full).items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    np.testing.assert_array_equal(second[name], value, err_msg=name)


@pytest.mark.xdist_group("multihost_jobs")
def test_fsdp_over_both_hosts_resumes_bitwise(tiny_data_dir, tmp_path, cache):
  """fsdp=4 over the 4 devices of both processes: leaves split across the hosts, saved
  (gathered for the integrity record), restored and verified; the run resumed from its
  step-2 checkpoint (a copy of the workdir as it stood then) equals the uninterrupted
  4-step run bitwise."""
  (full, _), _ = run_job("train", tiny_data_dir, tmp_path / "full.npz", cache,
                         workdir=tmp_path / "full", steps=4, fsdp=4)
  assert int(full["split_across_processes"]) >= 10
  workdir = rewound_copy(tmp_path / "full", tmp_path / "resumed", 2)
  (resumed, second), logs = run_job("train", tiny_data_dir, tmp_path / "resumed.npz", cache,
                                    workdir=workdir, steps=4, fsdp=4)
  assert "at step 2" in logs[0]
  assert int(resumed["step"]) == 4
  for name, value in model_fields(full).items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    np.testing.assert_array_equal(second[name], value, err_msg=name)


@pytest.mark.xdist_group("multihost_uninterrupted")
def test_sigterm_to_one_host_saves_on_both_and_resume_is_bitwise(tiny_data_dir, tmp_path, cache,
                                                                uninterrupted):
  """Process 1 alone is preempted; both save the same step and exit 0; the two-process run
  resumed from there equals the uninterrupted one bitwise."""
  full, _, _ = uninterrupted
  workdir = tmp_path / "preempted"
  processes = start_job("train", tiny_data_dir, tmp_path / "never.npz", cache, workdir=workdir,
                        steps=STEPS, sleep_per_step=0.7)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in processes):
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.1)
  exited_early = [p.poll() for p in processes]
  processes[1].send_signal(signal.SIGTERM)  # only the second host is preempted
  logs = [p.communicate(timeout=300)[1] for p in processes]
  for process_id, (process, log) in enumerate(zip(processes, logs)):
    assert process.returncode == 0, (f"process {process_id} (exit codes before the signal: "
                                     f"{exited_early}):\n{log}\nother process:\n"
                                     f"{logs[1 - process_id][-3000:]}")
  assert "SIGTERM" in logs[0]  # process 0 (the one that reports) stopped for process 1
  saved = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
  assert saved and 3 <= saved[-1] < STEPS, saved
  (resumed, _), logs = run_job("train", tiny_data_dir, tmp_path / "resumed.npz", cache,
                               workdir=workdir, steps=STEPS)
  assert f"at step {saved[-1]}" in logs[0]
  for name, value in model_fields(full).items():
    np.testing.assert_array_equal(resumed[name], value, err_msg=name)


@pytest.mark.xdist_group("multihost_uninterrupted")
def test_two_process_evaluation_features_match_one_process(tiny_data_dir, tmp_path, cache,
                                                           uninterrupted):
  _, _, workdir = uninterrupted
  single, _ = run_worker("features", tiny_data_dir, tmp_path / "single.npz", cache,
                         devices=PROCESSES * DEVICES_PER_PROCESS, workdir=workdir)
  (first, second), _ = run_job("features", tiny_data_dir, tmp_path / "multi.npz", cache,
                               workdir=workdir)
  for name in single:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)
  for split, count in (("train", 512), ("test", 256)):
    # Rows come back grouped by process shard, so compare in one canonical order: that of
    # the raw pixels, which both runs compute exactly.
    orders = [np.lexsort(result[f"raw_input_{split}_x"].T) for result in (single, first)]
    for name in ("raw_input", "pretrained", "random_init"):
      x_single, x_multi = (result[f"{name}_{split}_x"][order]
                           for result, order in zip((single, first), orders))
      assert x_single.shape[0] == x_multi.shape[0] == count, (name, split)
      np.testing.assert_allclose(x_multi, x_single, rtol=1e-4, atol=1e-5, err_msg=name)
      np.testing.assert_array_equal(first[f"{name}_{split}_y"][orders[1]],
                                    single[f"{name}_{split}_y"][orders[0]], err_msg=name)

"""A project command re-executes itself once under tcmalloc (ssl_jax/core/host_malloc.py):
which command lines count, where the library is found, the opt-out, and a library the
loader refuses (no loop)."""
import os
import subprocess
import sys

import pytest

from ssl_jax.core import host_malloc

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="LD_PRELOAD and /proc/self/maps are Linux's")


@pytest.mark.parametrize("argv, module", [
    (["python3", "-m", "experiments.vicreg", "--workdir", "/tmp/w"], "experiments.vicreg"),
    (["python", "-u", "-X", "importtime", "-m", "ssl_jax.train", "--config", "c"], "ssl_jax.train"),
    (["python", "-mssl_jax.tools.bench"], "ssl_jax.tools.bench"),
    (["python", "script.py", "-m", "ssl_jax.train"], None),
    (["python", "-c", "import ssl_jax", "-m", "x"], None),
    (["python", "-m"], None),
    (["python"], None),
])
def test_command_module_reads_the_dash_m_module(argv, module):
  assert host_malloc.command_module(argv) == module


def test_only_the_projects_packages_are_commands():
  assert host_malloc.is_project_command(["python", "-m", "experiments.mae"])
  assert host_malloc.is_project_command(["python", "-m", "ssl_jax.evaluate"])
  assert not host_malloc.is_project_command(["python", "-m", "pytest", "-m", "ssl_jax.x"])
  assert not host_malloc.is_project_command(["python", "-m", "ssl_jax_extras.run"])


def test_find_tcmalloc_takes_the_first_library_of_the_given_directories(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  assert host_malloc.find_tcmalloc((str(tmp_path / "*"),)) is None
  (tmp_path / "b" / "libtcmalloc.so.4").write_bytes(b"")
  assert host_malloc.find_tcmalloc((str(tmp_path / "*"),)) == str(tmp_path / "b" / "libtcmalloc.so.4")
  (tmp_path / "a" / "libtcmalloc_minimal.so.4").write_bytes(b"")
  assert host_malloc.find_tcmalloc((str(tmp_path / "*"),)) == str(
      tmp_path / "a" / "libtcmalloc_minimal.so.4")


def test_the_library_goes_first_in_ld_preload_once():
  assert host_malloc.with_preload("/lib/t.so", None) == "/lib/t.so"
  assert host_malloc.with_preload("/lib/t.so", "/a.so:/lib/t.so:/b.so") == "/lib/t.so:/a.so:/b.so"


def test_the_setting_chooses_the_library(monkeypatch):
  monkeypatch.setenv(host_malloc.ENV, "0")
  assert host_malloc.chosen_library() is None
  monkeypatch.setenv(host_malloc.ENV, "/opt/libtcmalloc.so")
  assert host_malloc.chosen_library() == "/opt/libtcmalloc.so"
  monkeypatch.delenv(host_malloc.ENV)
  assert host_malloc.chosen_library() == host_malloc.find_tcmalloc()


def test_loaded_reads_the_process_memory_map(tmp_path):
  maps = tmp_path / "maps"
  maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
  assert not host_malloc.loaded(str(maps))
  maps.write_text(maps.read_text() + "7f02-7f03 r-xp 0 08:01 2 /usr/lib/libtcmalloc_minimal.so.4\n")
  assert host_malloc.loaded(str(maps))
  assert not host_malloc.loaded(str(tmp_path / "missing"))


def _run_command(extra_env: dict, module="ssl_jax.core.host_malloc", flag="-m"):
  """`python -m ssl_jax.core.host_malloc` (prints whether tcmalloc is mapped) in an
  environment without any preload of the caller's."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", host_malloc.ENV, host_malloc.REEXEC_MARK)}
  env.update(extra_env)
  return subprocess.run([sys.executable, flag, module], env=env, capture_output=True, text=True,
                        timeout=120, check=True)


@linux_only
def test_a_command_runs_under_tcmalloc_and_the_opt_out_keeps_glibc():
  assert host_malloc.find_tcmalloc(), ("no tcmalloc on this host: scripts/setup.sh installs "
                                       "libtcmalloc-minimal4")
  result = _run_command({})
  assert result.stdout.strip() == "tcmalloc loaded: True", result.stderr
  opted_out = _run_command({host_malloc.ENV: "0"})
  assert opted_out.stdout.strip() == "tcmalloc loaded: False"
  assert "tcmalloc" not in opted_out.stderr


@linux_only
def test_code_that_imports_ssl_jax_is_not_reexecuted():
  result = _run_command({}, flag="-c",
                        module="import ssl_jax; from ssl_jax.core import host_malloc; "
                               "print(host_malloc.loaded())")
  assert result.stdout.strip() == "False"


@linux_only
def test_a_missing_or_refused_library_leaves_the_system_allocator_with_a_hint(tmp_path):
  missing = _run_command({host_malloc.ENV: str(tmp_path / "missing.so")})
  assert missing.stdout.strip() == "tcmalloc loaded: False"
  assert "is not a file" in missing.stderr
  not_a_library = tmp_path / "libtcmalloc_fake.so"
  not_a_library.write_bytes(b"not an ELF file")
  refused = _run_command({host_malloc.ENV: str(not_a_library)})  # re-executed once, no loop
  assert refused.stdout.strip() == "tcmalloc loaded: False"
  assert "was not loaded; running under the system allocator" in refused.stderr

"""Run the project's commands under tcmalloc when the host has it.

Why: XLA:CPU allocates every step's buffers with the C library's malloc. glibc serves a
block above its mmap threshold (at most 32 MiB; a step's temporaries are often more) with
fresh pages from the kernel and hands them back on free, so each step faults in and zeroes
its large temporaries again. tcmalloc keeps freed memory for reuse. On a 2-core AMD EPYC
VM that made the MAE ViT bench step 1.3-1.5x faster (docs/performance.md). glibc's own
switches (no mmap, one arena, transparent huge pages) recovered part of it; tcmalloc
recovered the most.

The allocator is chosen when the process starts (LD_PRELOAD), so a command re-executes its
interpreter once with LD_PRELOAD set. Only `python -m ssl_jax.*` and `python -m
experiments.*` commands do (`ssl_jax/__init__.py` calls `reexec_if_command`): importing
ssl_jax from a notebook, a test or your own script never re-executes anything; there, set
LD_PRELOAD yourself.

SSL_JAX_TCMALLOC: unset, search the usual library directories; "0", keep the system
allocator (and no hint); a path, preload that library (e.g. gperftools' full
libtcmalloc.so). This module must not import jax: it runs before jax starts.
"""
import glob
import os
import sys

ENV = "SSL_JAX_TCMALLOC"
# Set in the re-executed process, so that a library the loader refused (it says so on
# stderr) is not retried forever.
REEXEC_MARK = "SSL_JAX_TCMALLOC_REEXEC"
LIBRARY_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so",
                 "libtcmalloc.so")
LIBRARY_DIRS = ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
                "/lib/*-linux-gnu")
COMMAND_PACKAGES = ("ssl_jax", "experiments")
INSTALL_HINT = ("apt-get install libtcmalloc-minimal4 (Debian/Ubuntu) or gperftools-libs "
                "(Fedora/RHEL)")


def find_tcmalloc(dirs=LIBRARY_DIRS) -> str | None:
  """The first tcmalloc shared library in `dirs` (glob patterns), or None."""
  for pattern in dirs:
    for directory in sorted(glob.glob(pattern)):
      for name in LIBRARY_NAMES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
          return path
  return None


def chosen_library() -> str | None:
  """The library SSL_JAX_TCMALLOC names, else the first one found; None when it is "0" or
  none is found."""
  setting = os.environ.get(ENV, "")
  if setting == "0":
    return None
  return setting or find_tcmalloc()


def with_preload(library: str, ld_preload: str | None) -> str:
  """An LD_PRELOAD value that loads `library` first, before what `ld_preload` held."""
  kept = [path for path in (ld_preload or "").split(":") if path and path != library]
  return ":".join([library, *kept])


def loaded(maps_path: str = "/proc/self/maps") -> bool:
  """Whether a tcmalloc library is mapped into this process."""
  try:
    with open(maps_path) as maps:
      return any("libtcmalloc" in line for line in maps)
  except OSError:
    return False


# Interpreter options that take the next argument as their value.
VALUE_OPTIONS = ("-X", "-W", "--check-hash-based-pycs")


def command_module(argv) -> str | None:
  """The module of a `python [options] -m MODULE ...` command line, else None."""
  args = list(argv)[1:]
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == "-m":
      return args[i + 1] if i + 1 < len(args) else None
    if arg.startswith("-m"):
      return arg[2:]
    if arg in ("-c", "-") or not arg.startswith("-"):  # code, stdin or a script
      return None
    i += 2 if arg in VALUE_OPTIONS else 1
  return None


def is_project_command(argv) -> bool:
  module = command_module(argv)
  return module is not None and module.split(".")[0] in COMMAND_PACKAGES


def reexec_if_command() -> None:
  """Re-execute this interpreter once under tcmalloc if it runs one of the project's
  modules as a command (`python -m ssl_jax.train`, `python -m experiments.NAME`, ...), on
  Linux, tcmalloc is not loaded yet, and SSL_JAX_TCMALLOC is not "0". Without a library,
  print how to install one and go on under the system allocator."""
  setting = os.environ.get(ENV, "")
  if (setting == "0" or not sys.platform.startswith("linux")
      or not is_project_command(getattr(sys, "orig_argv", ())) or loaded()):
    return
  if os.environ.get(REEXEC_MARK):  # preloaded, and the loader refused it: do not loop
    print(f"ssl_jax: {os.environ.get('LD_PRELOAD')} was not loaded; running under the "
          f"system allocator ({ENV}=0 silences this)", file=sys.stderr)
    return
  library = chosen_library()
  if library is None or not os.path.isfile(library):
    what = f"{ENV}={setting} is not a file" if setting else "tcmalloc was not found"
    print(f"ssl_jax: {what}; XLA:CPU steps run up to ~1.5x slower under glibc's malloc. "
          f"Install it ({INSTALL_HINT}), or set {ENV}=0 to silence this.", file=sys.stderr)
    return
  env = dict(os.environ)
  env["LD_PRELOAD"] = with_preload(library, env.get("LD_PRELOAD"))
  env[REEXEC_MARK] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), env)


if __name__ == "__main__":
  print(f"tcmalloc loaded: {loaded()}")

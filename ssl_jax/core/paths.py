"""Every file operation on a workdir or an export, for local paths and for URLs (gs://, s3://,
any fsspec scheme) alike.

A local path goes through `os`; a URL through fsspec (gcsfs for gs://, which orbax's own
epath paths use too). Paths are strings in and out, so callers join and print them as they
would any path. What differs between the two is kept here:

- a write replaces a file whole (a local file by rename, an object by one upload), so a
  reader never sees half of one;
- nothing appends to an object: `append_lines` rewrites it;
- `create_exclusive` and `remove_if_unchanged` are the two atomic steps a lock needs: on a
  local disk, O_EXCL and rename; on GCS, a generation precondition (ifGenerationMatch),
  which the service checks. Other object stores get a check-then-write that is not atomic.
"""
import os
import shutil
import time

from ssl_jax.core import errors


def is_remote(path: str) -> bool:
  return "://" in str(path)


def absolute(path: str) -> str:
  """A local path made absolute; a URL as given, less any trailing slash."""
  path = str(path)
  return path.rstrip("/") if is_remote(path) else os.path.abspath(path)


def join(path: str, *parts: str) -> str:
  if is_remote(path):
    return "/".join([str(path).rstrip("/"), *(p.strip("/") for p in parts)])
  return os.path.join(path, *parts)


def dirname(path: str) -> str:
  return str(path).rstrip("/").rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(
      os.path.abspath(path))


def _fs(path: str):
  """(fsspec file system, path without its scheme) of a URL."""
  try:
    import fsspec
    return fsspec.core.url_to_fs(path)
  except ImportError as error:  # e.g. s3:// without s3fs
    scheme = str(path).split("://", 1)[0]
    raise errors.WorkdirError(f"{path}: {scheme}:// paths need {error.name or 'a driver'} "
                              f"(pip install {error.name})") from None
  except ValueError as error:  # fsspec: "Protocol not known"
    raise errors.WorkdirError(f"{path}: {error}; use a local path or a gs:// URL") from None


def _fresh(path: str):
  """`_fs(path)` with its listing cache dropped: another process (or orbax's own gcsfs
  instance) may have written under it since this one last looked."""
  fs, key = _fs(path)
  fs.invalidate_cache()
  return fs, key


def exists(path: str) -> bool:
  if not is_remote(path):
    return os.path.exists(path)
  fs, key = _fresh(path)
  return fs.exists(key)


def isfile(path: str) -> bool:
  if not is_remote(path):
    return os.path.isfile(path)
  fs, key = _fresh(path)
  return fs.isfile(key)


def isdir(path: str) -> bool:
  """On an object store, whether any object lies under `path/` (a folder there has no
  existence of its own)."""
  if not is_remote(path):
    return os.path.isdir(path)
  fs, key = _fresh(path)
  return fs.isdir(key)


def makedirs(path: str) -> None:
  """Creates a local folder and its parents; nothing to do on an object store."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  """The names directly under `path` (empty when it does not exist)."""
  if not is_remote(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []
  fs, key = _fresh(path)
  if not fs.isdir(key):
    return []
  return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(key, detail=False))


def read_bytes(path: str) -> bytes:
  if not is_remote(path):
    with open(path, "rb") as f:
      return f.read()
  fs, key = _fresh(path)
  return fs.cat_file(key)


def read_text(path: str) -> str:
  return read_bytes(path).decode()


def write_bytes(path: str, data: bytes) -> None:
  """Replaces `path` whole: a reader sees the old file or the new one."""
  if is_remote(path):
    fs, key = _fs(path)
    fs.pipe_file(key, data)
    return
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "wb") as f:
    f.write(data)
  os.replace(temporary, path)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def append_lines(path: str, lines: list[str]) -> None:
  """Appends to a local file; rewrites an object (objects cannot grow in place)."""
  if not is_remote(path):
    with open(path, "a") as f:
      f.writelines(lines)
      f.flush()
    return
  previous = read_bytes(path) if exists(path) else b""
  write_bytes(path, previous + "".join(lines).encode())


def remove(path: str) -> None:
  if not is_remote(path):
    os.remove(path)
    return
  fs, key = _fs(path)
  fs.rm_file(key)


def remove_tree(path: str) -> None:
  if not is_remote(path):
    shutil.rmtree(path)
    return
  fs, key = _fs(path)
  fs.rm(key, recursive=True)
  _forget_listings(fs)


def move(source: str, target: str) -> None:
  """Moves a file or a folder. Local: a rename; on an object store, a copy of every object
  then their removal (what a move is there)."""
  if not is_remote(source):
    shutil.move(source, target)
    return
  fs, key = _fresh(source)
  _, target_key = _fs(target)
  fs.copy(key, target_key, recursive=True)
  fs.rm(key, recursive=True)
  _forget_listings(fs)


def age_seconds(path: str) -> float:
  """Seconds since `path` was last written."""
  if not is_remote(path):
    return time.time() - os.path.getmtime(path)
  fs, key = _fresh(path)
  return time.time() - fs.modified(key).timestamp()


# ---------------------------------------------------------------- atomic steps for a lock


def create_exclusive(path: str, text: str) -> bool:
  """Writes `path` only if it does not exist; False when it does. Atomic locally and on GCS."""
  if not is_remote(path):
    try:
      with open(path, "x") as f:
        f.write(text)
      return True
    except FileExistsError:
      return False
  if exists(path):
    return False
  fs, key = _fs(path)
  if _is_gcs(fs):
    try:
      fs.pipe_file(key, text.encode(), mode="create")  # ifGenerationMatch=0: GCS decides
    except FileExistsError:
      return False
    return True
  fs.pipe_file(key, text.encode())  # another store: the check above is all there is
  return True


def version(path: str) -> str | None:
  """An opaque token that changes whenever `path` is rewritten; None when it is absent."""
  if not is_remote(path):
    try:
      stat = os.stat(path)
    except FileNotFoundError:
      return None
    return f"{stat.st_ino}:{stat.st_mtime_ns}"
  fs, key = _fresh(path)
  try:
    info = fs.info(key)
  except FileNotFoundError:
    return None
  return str(info.get("generation") or info.get("ETag") or info.get("mtime"))


def remove_if_unchanged(path: str, token: str) -> bool:
  """Removes `path` if it is still the version `token` (from `version`); False otherwise.
  Of two processes removing the same version, at most one succeeds."""
  if not is_remote(path):
    aside = f"{path}.removing-{os.getpid()}"
    try:
      os.rename(path, aside)  # atomic: of two processes, one gets the file
    except FileNotFoundError:
      return False
    if version(aside) != token:  # replaced meanwhile: put it back
      os.rename(aside, path)
      return False
    os.remove(aside)
    return True
  fs, key = _fs(path)
  if _is_gcs(fs):
    bucket, name, _ = fs.split_path(key)
    try:
      fs.call("DELETE", "b/{}/o/{}", bucket, name, ifGenerationMatch=token)
    except (FileNotFoundError, FileExistsError):  # gone, or another generation (412)
      return False
    fs.invalidate_cache()
    return True
  if version(path) != token:
    return False
  fs.rm_file(key)
  return True


def _forget_listings(fs) -> None:
  """Drops every cached listing of this kind of file system in this process: orbax (through
  etils.epath) holds its own instance, which would otherwise still see a moved folder."""
  for instance in list(getattr(type(fs), "_cache", {}).values()) + [fs]:
    instance.invalidate_cache()


def _is_gcs(fs) -> bool:
  return "gs" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))

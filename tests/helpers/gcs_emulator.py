"""A GCS JSON API on 127.0.0.1 (PyPI's gcp-storage-emulator, in memory, with the generation
behaviours it lacks added by gcs_emulator_server.py), for testing gs:// workdirs end to end:
gcsfs (the path layer, orbax's directory operations) finds it through STORAGE_EMULATOR_HOST,
tensorstore (orbax's array files) through TENSORSTORE_GCS_HTTP_URL.
"""
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

BUCKET = "ssl-jax-test"


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def environment(port: int) -> dict:
  url = f"http://127.0.0.1:{port}"
  return {
      "STORAGE_EMULATOR_HOST": url,
      "TENSORSTORE_GCS_HTTP_URL": url,
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",   # tensorstore: no credential lookup
      "GOOGLE_CLOUD_PROJECT": "ssl-jax-test",
      # gcsfs asks for a bucket's hierarchical-namespace layout, which the emulator lacks.
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
  }


@contextlib.contextmanager
def running():
  """Starts the emulator with one empty bucket; sets this process's environment for it
  (test subprocesses inherit it); yields the bucket's URL, gs://ssl-jax-test."""
  port = _free_port()
  server = subprocess.Popen(
      [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "gcs_emulator_server.py"), f"--port={port}",
       f"--bucket={BUCKET}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  saved = {key: os.environ.get(key) for key in environment(port)}
  os.environ.update(environment(port))
  try:
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b/{BUCKET}", timeout=2)
        break
      except OSError:
        if server.poll() is not None or time.time() > deadline:
          raise RuntimeError("the GCS emulator did not start") from None
        time.sleep(0.2)
    yield f"gs://{BUCKET}"
  finally:
    server.terminate()
    server.wait(timeout=30)
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value

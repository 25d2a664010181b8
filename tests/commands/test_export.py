"""`python -m ssl_jax.export`: the backbone of a run as safetensors + a JSON sidecar, whose
features equal the checkpoint's own `encode` bitwise (a ResNet with BatchNorm statistics,
and MAE's ViT)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import reference_subset
from ssl_jax import evals, export, methods, models
from ssl_jax.core import errors, parallel
from ssl_jax.training import checkpoint, engine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def checkpoint_features(workdir: str, images: np.ndarray) -> np.ndarray:
  """The primary features `python -m ssl_jax.evaluate` would extract from the checkpoint."""
  config = evals.load_run_config(workdir)
  method, mesh = methods.get(config.method), parallel.make_mesh()
  fields = checkpoint.Checkpointer(workdir, async_save=False).restore_fields(
      engine.abstract_model_fields(method, config, mesh, engine.example_batch(config)))
  encode = jax.jit(lambda p, s, b: method.encode(p, s, b, config))
  out = encode(fields["params"], fields["method_state"], {"image": images})
  return np.asarray(out if not isinstance(out, dict) else next(iter(out.values())))


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_exported_features_equal_the_checkpoints_bitwise(method, smoke_run, tmp_path):
  workdir, result = smoke_run(method)
  assert result.returncode == 0, result.stderr[-3000:]
  out = str(tmp_path / "backbone.safetensors")
  sidecar = export.export(str(workdir), out)
  on_disk = json.load(open(tmp_path / "backbone.json"))
  assert on_disk == sidecar and sidecar["method"] == method
  config = evals.load_run_config(str(workdir))
  assert sidecar["checkpoint_step"] == config.total_steps
  assert sidecar["model"] == config.model.to_dict()
  assert sidecar["input"]["mean"] == list(config.data.mean)
  assert all(name.startswith(("backbone/", "extra/")) for name in sidecar["tensors"])
  # The dataset as TFDS reads it: this project's offline builder, not the catalogue's.
  assert sidecar["input"]["tfds_name"] == "fashion_mnist_local"
  assert sidecar["input"]["builder_module"] == "ssl_jax.data.builders.fashion_mnist_local"
  if method == "mae":  # the ViT's fixed positions, as timm's pos_embed
    from safetensors.numpy import load_file
    table = load_file(out)["extra/pos_embed"]
    width, grid = config.model.width, config.data.image_size // config.model.patch_size
    assert table.shape == (1, 1 + grid * grid, width) and not table[0, 0].any()
    omega = 1.0 / 10000 ** (np.arange(width // 4) / (width // 4))  # MAE's 2-D sin-cos
    for row, col in [(0, 1), (2, 0), (grid - 1, grid - 1)]:
      angles_w, angles_h = col * omega, row * omega
      expected = np.concatenate([np.sin(angles_w), np.cos(angles_w), np.sin(angles_h),
                                 np.cos(angles_h)])
      np.testing.assert_allclose(table[0, 1 + row * grid + col], expected, atol=1e-6)
  else:
    assert "extra/pos_embed" not in sidecar["tensors"]
  variables, loaded_sidecar = export.load(out)
  assert loaded_sidecar == sidecar
  assert ("batch_stats" in variables) == (method == "simclr")

  images, _ = reference_subset("test")
  images = images[:32, :, :, None]
  encode = jax.jit(lambda v, x: models.encode_images(v, x, export.input_config(sidecar)))
  from_file = np.asarray(encode(variables, images))
  assert from_file.shape == (32, sidecar["feature_dim"])
  np.testing.assert_array_equal(from_file, checkpoint_features(str(workdir), images))


def test_include_head_from_the_command_line_and_bad_files(smoke_run, tmp_path):
  workdir, _ = smoke_run("simclr")
  out = tmp_path / "all.safetensors"
  result = subprocess.run([sys.executable, "-m", "ssl_jax.export", "--workdir", str(workdir),
                           "--out", str(out), "--include_head", "--step", "2"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"wrote {out}" in result.stderr
  sidecar = json.load(open(tmp_path / "all.json"))
  assert sidecar["checkpoint_step"] == 2 and sidecar["include_head"]
  names = set(sidecar["tensors"])
  assert any(n.startswith("method/params/head/") for n in names)
  assert any(n.startswith("method/method_state/batch_stats/") for n in names)
  backbone = {n[len("backbone/"):] for n in names if n.startswith("backbone/")}
  assert backbone and all(f"method/{n.replace('params/', 'params/backbone/', 1)}" in names
                          for n in backbone if n.startswith("params/"))

  plain = tmp_path / "plain.safetensors"
  save_file({"w": np.zeros((2,), np.float32)}, str(plain))
  with pytest.raises(errors.ExportError, match="not an ssl_jax export"):
    export.load(str(plain))


@pytest.mark.smoke_methods("mlm")
def test_a_text_run_exports_its_encoder_and_tokenizer(smoke_run, tmp_path):
  """An MLM run's Transformer exports with its text input (tokenizer, vocabulary, length)
  in the sidecar, not an image normalisation it never had."""
  workdir, result = smoke_run("mlm")
  assert result.returncode == 0, result.stderr[-2000:]
  sidecar = export.export(str(workdir), str(tmp_path / "mlm.safetensors"))
  config = evals.load_run_config(str(workdir))
  assert sidecar["input"] == {"dataset": "fortunes", "tfds_name": "fortunes",
                              "builder_module": "ssl_jax.data.builders.fortunes",
                              "data_dir": config.data.data_dir, "modality": "text",
                              "tokenizer": config.data.tokenizer,
                              "vocab_size": config.data.vocab_size,
                              "max_length": config.data.max_length, "text_key": "text",
                              "tokenizer_file": "mlm.tokenizer.json"}
  variables, loaded = export.load(str(tmp_path / "mlm.safetensors"))
  assert loaded == sidecar and loaded["model"]["name"] == "transformer"
  # The tokenizer travels along: F.tokenizer.json, the very file the run tokenised with.
  from ssl_jax.data import text
  original = text.tokenizer_path(config.data.name, config.data.tokenizer, config.data.data_dir)
  assert (tmp_path / "mlm.tokenizer.json").read_text() == text.load_tokenizer(original).to_str()
  assert jax.tree.structure(variables["params"]) == jax.tree.structure(
      methods.get("mlm").backbone(*_fields(str(workdir)), config)["params"])


def _fields(workdir):
  config = evals.load_run_config(workdir)
  method, mesh = methods.get(config.method), parallel.make_mesh()
  fields = checkpoint.Checkpointer(workdir, async_save=False).restore_fields(
      engine.abstract_model_fields(method, config, mesh, engine.example_batch(config)))
  return fields["params"], fields["method_state"]


@pytest.mark.smoke_methods("clip")
def test_clip_exports_both_towers_and_its_tokenizer(smoke_run, tmp_path):
  """CLIP's image tower is the backbone; its text tower is `text_backbone`, with the
  tokenizer of the captions beside the file."""
  workdir, result = smoke_run("clip")
  assert result.returncode == 0, result.stderr[-2000:]
  out = str(tmp_path / "clip.safetensors")
  sidecar = export.export(str(workdir), out)
  config = evals.load_run_config(str(workdir))
  assert sidecar["text_model"] == config.text_model.to_dict()
  params, method_state = _fields(str(workdir))
  image_tower, _ = export.load(out)
  text_tower, _ = export.load(out, part="text_backbone")
  for loaded, trained in ((image_tower["params"], params["image_encoder"]),
                          (text_tower["params"], params["text_encoder"])):
    assert jax.tree.structure(loaded) == jax.tree.structure(trained)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(trained)):
      np.testing.assert_array_equal(a, b)
  assert (tmp_path / sidecar["input"]["tokenizer_file"]).is_file()
  with pytest.raises(errors.ExportError, match="holds no 'heads' tensors"):
    export.load(out, part="heads")

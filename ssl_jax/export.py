"""Weights leave the framework: a pretrained backbone as a safetensors file.

    python -m ssl_jax.export --workdir W [--step S] --out F.safetensors [--include_head]
    python -m ssl_jax.export --workdir W --out F.safetensors --format torch

Restores params and method_state only (no optimizer state) from the latest or `--step`
checkpoint of W, takes the method's backbone (`method.backbone(params, method_state,
config)`: the variables of `models.build(config.model)`) and writes

  F.safetensors   tensors "backbone/params/...", "backbone/batch_stats/..." (flax paths
                  joined by "/"); with --include_head also "method/params/..." and
                  "method/method_state/..." (every trained head, EMA target, queue)
                  a ViT's fixed position embeddings as "extra/pos_embed" ([1, 1 + grid
                  cells, width], the class token's row first and zero, timm's layout)
  F.json          the sidecar: format, method, architecture config (config.model),
                  checkpoint step, feature dimension, input normalisation (or the
                  tokenizer), the dataset with the TFDS builder that reads it and its
                  data dir, tensor names

A text run's tokenizer goes beside the file (F.tokenizer.json), and CLIP's text tower into
it as "text_backbone/..." (`load(F, part="text_backbone")`).

`--format torch` writes the backbone alone under PyTorch's names instead (torchvision's
ResNet, timm's ViT, transformers' BertModel; models/torch_names.py says how to build the
matching torch module):
`model.load_state_dict(safetensors.torch.load_file(F))`.

The sidecar is also stored in the safetensors header (metadata key "ssl_jax"), so the file
alone is enough. `load(F)` returns (backbone variables, sidecar), and
`models.encode_images(variables, images, input_config(sidecar))` computes the features the
checkpoint's `encode` gives, bitwise.
"""
import json
import os
import sys
import tempfile

import jax
import ml_collections
import numpy as np
from absl import app, flags
from safetensors import safe_open
from safetensors.numpy import save as safetensors_bytes

from ssl_jax import evals, methods, models
from ssl_jax.data import builders, text
from ssl_jax.models import torch_names, vit
from ssl_jax.core import log, parallel, paths
from ssl_jax.core.errors import ExportError
from ssl_jax.training import checkpoint, engine

FORMAT = "ssl_jax.export/1"
METADATA_KEY = "ssl_jax"
NAMES = ("ssl_jax", "torch")
TORCH_NAMES = {"resnet": "torchvision resnet", "vit": "timm VisionTransformer",
               "transformer": "transformers BertModel"}



def flatten(tree: dict, prefix: str) -> dict:
  """{"prefix/a/b": array} for every leaf of a nested dict."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    out["/".join([prefix] + [str(getattr(k, "key", k)) for k in path])] = np.asarray(leaf)
  return out


def unflatten(tensors: dict, prefix: str) -> dict:
  """The nested dict under `prefix/` of a flat {"a/b/c": array} mapping."""
  tree: dict = {}
  for name, value in tensors.items():
    parts = name.split("/")
    if parts[0] != prefix:
      continue
    node = tree
    for part in parts[1:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return tree


def sidecar_path(out: str) -> str:
  root, _ = os.path.splitext(out)
  return root + ".json"


def export(workdir: str, out: str, step: int | None = None, include_head: bool = False,
           names: str = "ssl_jax") -> dict:
  """Writes `out` and its sidecar (and a text run's tokenizer); returns the sidecar. `names`:
  "ssl_jax" (flax paths, what `load` reads) or "torch" (torchvision's, timm's or
  transformers' names, models/torch_names.py)."""
  if names not in NAMES:
    raise ExportError(f"--format {names!r}; expected one of {NAMES}")
  if names == "torch" and include_head:
    raise ExportError("--include_head has no PyTorch names: export the heads in the default "
                      "format")
  config = evals.load_run_config(workdir)
  method = methods.get(config.method)
  if not callable(getattr(method, "backbone", None)) or "model" not in config:
    raise ExportError(f"method {config.method!r} has no backbone(params, method_state, config) "
                      "over config.model (see ssl_jax/methods/__init__.py): nothing to export")
  mesh = parallel.make_mesh()
  fields = checkpoint.Checkpointer(workdir, async_save=False).restore_fields(
      engine.abstract_model_fields(method, config, mesh, engine.example_batch(config)), step=step)
  params, method_state = parallel.to_host((fields["params"], fields["method_state"]))
  variables = method.backbone(params, method_state, config)
  text_tower = getattr(method, "text_backbone", None)  # CLIP's second tower
  extra = extra_tensors(config)
  if names == "torch":
    tensors = torch_names.state_dict(variables, config.model, extra.get("extra/pos_embed"),
                                     channels=len(config.data.get("mean", ())) or None)
    if text_tower is not None:
      tensors.update({f"text.{name}": value for name, value in torch_names.state_dict(
          text_tower(params, method_state, config), config.text_model).items()})
  else:
    tensors = flatten(variables, "backbone")
    tensors.update(extra)
    if text_tower is not None:
      tensors.update(flatten(text_tower(params, method_state, config), "text_backbone"))
  if include_head:
    tensors.update(flatten(params, "method/params"))
    tensors.update(flatten(method_state, "method/method_state"))
  sidecar = {
      "format": FORMAT, "method": config.method, "model": config.model.to_dict(),
      "checkpoint_step": int(fields["step"]), "workdir": paths.absolute(workdir),
      "feature_dim": int(models.build(config.model).feature_dim),
      "input": input_record(config, method),
      "include_head": include_head, "names": TORCH_NAMES.get(config.model.name, "")
      if names == "torch" else "ssl_jax", "tensors": sorted(tensors)}
  if text_tower is not None:
    sidecar["text_model"] = config.text_model.to_dict()
  tokenizer = None
  if "tokenizer" in config.data:  # text and image-text runs: the tokenizer travels along
    tokenizer = text.load_tokenizer(text.tokenizer_path(config.data.name, config.data.tokenizer,
                                                        config.data.data_dir)).to_str()
    sidecar["input"]["tokenizer_file"] = tokenizer_path(out).rsplit("/", 1)[-1]
  if jax.process_index() == 0:
    paths.makedirs(paths.dirname(out))
    paths.write_bytes(out, safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(sidecar)}))
    paths.write_text(sidecar_path(out), json.dumps(sidecar, indent=2))
    if tokenizer is not None:
      paths.write_text(tokenizer_path(out), tokenizer)
  return sidecar


def tokenizer_path(out: str) -> str:
  """F.tokenizer.json beside F.safetensors: the run's WordPiece tokenizer (HF tokenizers)."""
  root, _ = os.path.splitext(out)
  return root + ".tokenizer.json"


def load(path: str, part: str = "backbone") -> tuple[dict, dict]:
  """(backbone variables {"params", ["batch_stats"]}, sidecar) of an exported file (a local
  path or a URL); part="text_backbone": CLIP's text tower instead."""
  if paths.is_remote(path):
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as local:
      local.write(paths.read_bytes(path))
      local.flush()
      return load(local.name, part)
  with safe_open(path, framework="numpy") as f:
    metadata = f.metadata() or {}
    if METADATA_KEY not in metadata:
      raise ExportError(f"{path} is not an ssl_jax export (no {METADATA_KEY!r} metadata)")
    sidecar = json.loads(metadata[METADATA_KEY])
    if sidecar.get("format") != FORMAT:
      raise ExportError(f"{path}: format {sidecar.get('format')!r}, expected {FORMAT!r}")
    if sidecar.get("names", "ssl_jax") != "ssl_jax":
      raise ExportError(f"{path} holds PyTorch names ({sidecar['names']}): read it with "
                        "safetensors.torch.load_file and model.load_state_dict")
    tensors = {name: f.get_tensor(name) for name in f.keys()}
  if not any(name.startswith(part + "/") for name in tensors):
    raise ExportError(f"{path} holds no {part!r} tensors (its parts: "
                      f"{sorted({name.split('/')[0] for name in tensors})})")
  return unflatten(tensors, part), sidecar


def extra_tensors(config) -> dict:
  """Arrays the network computes rather than learns, for readers outside ssl_jax: a ViT's
  2-D sin-cos position embeddings at the evaluation image size, as timm's `pos_embed`."""
  if config.model.name != "vit" or "image_size" not in config.data:
    return {}
  network = models.build(config.model)
  grid = config.data.image_size // network.patch_size
  table = np.concatenate([np.zeros((1, network.width), np.float32),
                          vit.sincos_2d(network.width, grid, grid)])
  return {"extra/pos_embed": table[None]}


def dataset_record(data) -> dict:
  """The dataset as TFDS knows it: its name, the builder that reads it and the data dir
  (an offline builder of this project must be imported for TFDS to find it, or TFDS
  tries a download of the catalogue dataset of the same friendly name)."""
  name = builders.ALIASES.get(data.name, data.name)
  return {"dataset": data.name, "tfds_name": name, "builder_module": builders.MODULES.get(name),
          "data_dir": data.get("data_dir") or os.environ.get("TFDS_DATA_DIR")}


def input_record(config, method) -> dict:
  """What the backbone's inputs were: for images the size and normalisation, for text the
  tokenizer, its vocabulary and the sequence length."""
  data = config.data
  record = {**dataset_record(data), "modality": data.modality}
  if data.modality == "text":
    return {**record, "tokenizer": data.tokenizer, "vocab_size": data.vocab_size,
            "max_length": data.max_length, "text_key": data.text_key}
  return {**record, "image_size": data.get("image_size"), "mean": list(data.mean),
          "std": list(data.std), "pixel_scale": "uint8 / 255, then (x - mean) / std",
          # A method whose pretraining showed the backbone another input says which.
          "pretraining_input": getattr(method, "PRETRAINING_INPUT", "the normalised image")}


def input_config(sidecar: dict) -> ml_collections.ConfigDict:
  """The `model` and `data` sections `models.encode_images` needs, from a sidecar."""
  data = sidecar["input"]
  return ml_collections.ConfigDict({
      "model": sidecar["model"],
      "data": {"image_size": data["image_size"], "mean": tuple(data["mean"]),
               "std": tuple(data["std"])}})


def main(argv):
  del argv
  log.quiet_libraries()
  with log.fail_cleanly():
    sidecar = export(flags.FLAGS.workdir, flags.FLAGS.out, flags.FLAGS.step,
                     flags.FLAGS.include_head, flags.FLAGS.format)
  print(f"wrote {flags.FLAGS.out} ({len(sidecar['tensors'])} tensors, {sidecar['method']} "
        f"step {sidecar['checkpoint_step']}, {sidecar['feature_dim']}-d features) and "
        f"{sidecar_path(flags.FLAGS.out)}", file=sys.stderr)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Workdir of a pretraining run.")
  flags.DEFINE_string("out", None, "Output .safetensors path (the sidecar goes beside it, .json).")
  flags.DEFINE_integer("step", None, "Checkpoint step to export; default: the latest.")
  flags.DEFINE_bool("include_head", False, "Also write every trained parameter and the "
                    "method_state (heads, EMA targets, queues) under method/.")
  flags.DEFINE_enum("format", "ssl_jax", list(NAMES), "Tensor names: ssl_jax (flax paths, "
                    "read by export.load) or torch (torchvision ResNet / timm ViT names).")
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)

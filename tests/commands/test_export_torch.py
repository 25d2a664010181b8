"""`--format torch` (models/torch_names.py): a backbone's weights under torchvision's ResNet
and timm's ViT names. PyTorch is the reference: the torch module built as the docstring says,
loaded strictly from the mapped weights, must compute the features the flax backbone
computes from the same variables (random, with non-trivial BatchNorm statistics), to
float32 rounding. Each test runs where its library is installed (torch with torchvision,
timm or transformers; none is in CI's set-up)."""
import json

import jax
import numpy as np
import pytest

from ssl_jax import export, models
from ssl_jax.core import errors
from ssl_jax.models import torch_names, vit as vit_lib

torch = pytest.importorskip("torch")


def _declare_torchvision_ops():
  """torchvision's wheels on PyPI are built for torch's CUDA wheel; beside torch's CPU wheel
  its C++ ops do not load, and its import then fails registering two of them (nms, qnms).
  Declaring their schemas first lets the pure-Python models import; none is used here."""
  try:
    torch.ops.torchvision.nms  # pylint: disable=pointless-statement
  except (AttributeError, RuntimeError):
    library = torch.library.Library("torchvision", "DEF")  # pylint: disable=unused-variable
    for op in ("nms", "qnms"):
      library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _declare_torchvision_ops.library = library  # kept alive: dropping it undefines the ops


_declare_torchvision_ops()  # before anything (transformers too) may import torchvision


def _torchvision():
  return pytest.importorskip("torchvision")


def _timm():
  _torchvision()  # timm imports it
  return pytest.importorskip("timm")


def _flax_features(model_config, variables, images):
  network = models.build(model_config)
  return np.asarray(network.apply(variables, images, train=False))


def _perturbed_statistics(variables, seed=1):
  """Random running means and variances, so a BatchNorm mapped wrongly cannot pass."""
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda v: np.asarray(v), variables["batch_stats"])
  def perturb(tree):
    return {k: perturb(v) if isinstance(v, dict) else
            (rng.normal(0, 0.2, v.shape).astype(np.float32) if k == "mean"
             else rng.uniform(0.5, 2.0, v.shape).astype(np.float32)) for k, v in tree.items()}
  return {"params": variables["params"], "batch_stats": perturb(stats)}


def _torch_tensors(state):
  return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


@pytest.mark.parametrize("depth, small_stem", [(18, True), (50, False)])
def test_a_resnet_loads_into_torchvision_and_computes_the_same_features(depth, small_stem):
  torchvision = _torchvision()
  config = models.family("resnet").default_config(depth=depth, small_image_stem=small_stem)
  side = 28 if small_stem else 64
  images = np.random.default_rng(0).normal(size=(4, side, side, 3)).astype(np.float32)
  variables = dict(models.build(config).init(jax.random.PRNGKey(0), images[:1], train=False))
  variables = _perturbed_statistics(variables)
  state = torch_names.state_dict(variables, config)
  network = getattr(torchvision.models, f"resnet{depth}")()
  if small_stem:
    network.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    network.maxpool = torch.nn.Identity()
  network.fc = torch.nn.Identity()
  network.load_state_dict(_torch_tensors(state), strict=True)
  network.eval()
  with torch.no_grad():
    theirs = network(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  ours = _flax_features(config, variables, images)
  scale = np.abs(ours).max()
  np.testing.assert_allclose(theirs, ours, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize("pool, channels", [("token", 3), ("gap", 1)])
def test_a_vit_loads_into_timm_and_computes_the_same_features(pool, channels):
  timm = _timm()
  config = models.family("vit").default_config("Ti", 4, depth=3)
  config.pool = pool
  side = 32
  images = np.random.default_rng(0).normal(size=(4, side, side, channels)).astype(np.float32)
  variables = dict(models.build(config).init(jax.random.PRNGKey(0), images[:1], train=False))
  width, grid = 192, side // 4
  table = np.concatenate([np.zeros((1, width), np.float32), vit_lib.sincos_2d(width, grid, grid)])
  state = torch_names.state_dict(variables, config, table[None], channels=channels)
  network = timm.models.vision_transformer.VisionTransformer(
      img_size=side, patch_size=4, in_chans=channels, embed_dim=width, depth=3, num_heads=3,
      mlp_ratio=4.0, class_token=True, global_pool="token" if pool == "token" else "avg",
      num_classes=0, fc_norm=False)
  network.load_state_dict(_torch_tensors(state), strict=True)
  network.eval()
  with torch.no_grad():
    theirs = network(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  ours = _flax_features(config, variables, images)
  np.testing.assert_allclose(theirs, ours, atol=2e-5 * np.abs(ours).max(), rtol=0)


def test_the_export_command_writes_torch_names(smoke_run, tmp_path):
  torchvision = _torchvision()
  workdir, result = smoke_run("simclr")
  assert result.returncode == 0, result.stderr[-3000:]
  out = str(tmp_path / "resnet.safetensors")
  sidecar = export.export(str(workdir), out, names="torch")
  assert sidecar["names"] == "torchvision resnet"
  from safetensors.torch import load_file
  loaded = load_file(out)
  reference = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
  assert set(loaded) == set(reference.state_dict()) - {"fc.weight", "fc.bias"}
  assert json.load(open(tmp_path / "resnet.json")) == sidecar
  with pytest.raises(errors.ExportError, match="holds PyTorch names"):
    export.load(out)


def test_an_exported_mae_vit_in_timm_computes_the_checkpoints_features(smoke_run, tmp_path):
  """A trained run's ViT, exported with --format torch, as a user loads it into timm: the
  features of normalised test images equal the checkpoint's own `encode`."""
  timm = _timm()
  from conftest import reference_subset
  from safetensors.torch import load_file
  from ssl_jax import evals
  from test_export import checkpoint_features
  workdir, result = smoke_run("mae")
  assert result.returncode == 0, result.stderr[-3000:]
  out = str(tmp_path / "vit.safetensors")
  sidecar = export.export(str(workdir), out, names="torch")
  config = evals.load_run_config(str(workdir))
  model, data = sidecar["model"], sidecar["input"]
  network = timm.models.vision_transformer.VisionTransformer(
      img_size=data["image_size"], patch_size=model["patch_size"], in_chans=len(data["mean"]),
      embed_dim=config.model.width, depth=config.model.depth, num_heads=config.model.num_heads,
      mlp_ratio=model.get("mlp_ratio", 4.0), class_token=True, num_classes=0, fc_norm=False,
      global_pool="token" if model.get("pool", "token") == "token" else "avg")
  network.load_state_dict(load_file(out), strict=True)
  network.eval()
  images, _ = reference_subset("test")
  images = images[:16, :, :, None]
  normalised = (images / 255.0 - np.asarray(data["mean"])) / np.asarray(data["std"])
  with torch.no_grad():
    theirs = network(torch.from_numpy(normalised.transpose(0, 3, 1, 2).astype(np.float32)))
  ours = checkpoint_features(str(workdir), images)
  np.testing.assert_allclose(theirs.numpy(), ours, atol=2e-5 * np.abs(ours).max(), rtol=0)


@pytest.mark.parametrize("pool, type_vocab_size", [("mean", 0), ("cls", 2)])
def test_a_bert_transformer_loads_into_transformers_and_computes_the_same_features(
    pool, type_vocab_size):
  transformers = pytest.importorskip("transformers")
  import ml_collections
  data = ml_collections.ConfigDict({"vocab_size": 97, "max_length": 16})
  config = models.family("transformer").default_config("tiny", data, causal=False)
  config.pool, config.type_vocab_size = pool, type_vocab_size
  width, depth, heads, mlp_dim = models.family("transformer").PRESETS["tiny"]
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, 97, size=(4, 16)).astype(np.int32)
  for row, length in enumerate((16, 11, 6, 2)):  # padded texts ([PAD] = 0)
    tokens[row, length:] = 0
  variables = dict(models.build(config).init(jax.random.PRNGKey(0), tokens[:1], train=False))
  network = transformers.BertModel(transformers.BertConfig(
      vocab_size=97, hidden_size=width, num_hidden_layers=depth,
      num_attention_heads=heads, intermediate_size=mlp_dim,
      max_position_embeddings=16, layer_norm_eps=1e-12, hidden_act="gelu",
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), add_pooling_layer=False)
  network.load_state_dict(_torch_tensors(torch_names.state_dict(variables, config)), strict=True)
  network.eval()
  mask = torch.from_numpy(tokens != 0).long()
  with torch.no_grad():
    hidden = network(input_ids=torch.from_numpy(tokens).long(), attention_mask=mask).last_hidden_state
  hidden = hidden.numpy()
  theirs = (hidden[:, 0] if pool == "cls" else
            (hidden * mask.numpy()[..., None]).sum(1) / mask.numpy().sum(1, keepdims=True))
  ours = np.asarray(models.build(config).apply(variables, tokens, train=False))
  np.testing.assert_allclose(theirs, ours, atol=2e-5 * np.abs(ours).max(), rtol=0)


def test_a_causal_or_pre_norm_transformer_has_no_bert_names():
  import ml_collections
  data = ml_collections.ConfigDict({"vocab_size": 97, "max_length": 16})
  config = models.family("transformer").default_config("tiny", data, causal=True)
  with pytest.raises(errors.ExportError, match="BERT-style"):
    torch_names.state_dict({"params": {}}, config)


def test_an_exported_mlm_encoder_in_transformers_computes_the_checkpoints_features(
    tiny_data_dir, tmp_path):
  """BERT as published, trained two steps: post-norm, MLM + NSP (so its token-type table
  is trained too), exported and loaded into transformers' BertModel."""
  transformers = pytest.importorskip("transformers")
  from safetensors.torch import load_file
  from experiments import mlm as mlm_experiment
  from ssl_jax import evals, methods, train
  from test_export import _fields
  config = mlm_experiment.get_config("fortunes,nsp,smoke")
  config.model.norm = "post"  # BertModel's; the fortunes recipe's encoder is pre-norm
  config.data.data_dir = tiny_data_dir
  config.total_steps, config.async_checkpointing = 2, False
  workdir = tmp_path / "bert"
  train.train(config, str(workdir))
  out = str(tmp_path / "bert.safetensors")
  sidecar = export.export(str(workdir), out, names="torch")
  assert sidecar["names"] == "transformers BertModel"
  config = evals.load_run_config(str(workdir))
  network = models.build(config.model)
  network = transformers.BertModel(transformers.BertConfig(
      vocab_size=network.vocab_size, hidden_size=network.width, num_hidden_layers=network.depth,
      num_attention_heads=network.num_heads, intermediate_size=network.mlp_dim,
      max_position_embeddings=network.max_length, layer_norm_eps=1e-12, hidden_act="gelu"),
      add_pooling_layer=False)
  network.load_state_dict(load_file(out), strict=True)
  network.eval()
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, config.data.vocab_size, (8, config.data.max_length)).astype(np.int32)
  tokens[1::2, config.data.max_length // 2:] = 0
  mask = (tokens != 0)[..., None]
  with torch.no_grad():
    hidden = network(input_ids=torch.from_numpy(tokens).long(),
                     attention_mask=torch.from_numpy(mask[..., 0]).long()).last_hidden_state.numpy()
  theirs = (hidden * mask).sum(1) / mask.sum(1)
  params, method_state = _fields(str(workdir))
  ours = methods.get("mlm").encode(params, method_state, {"tokens": tokens}, config)
  ours = np.asarray(ours if not isinstance(ours, dict) else next(iter(ours.values())))
  np.testing.assert_allclose(theirs, ours, atol=2e-5 * np.abs(ours).max(), rtol=0)

"""A backbone's variables under the names and layouts PyTorch's own models use, as numpy
arrays (no torch needed to write them; `safetensors.torch.load_file` then
`model.load_state_dict` reads them):

- ResNet -> torchvision's `resnet{18,34,50}` (`conv1`, `bn1`, `layer{s}.{b}.conv{i}`,
  `layer{s}.{b}.downsample.{0,1}`). The layouts match: stride in the 3x3 conv of a
  bottleneck (torchvision's v1.5), symmetric padding k//2, BatchNorm eps 1e-5. A network
  with the small-image stem needs `model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)`
  and `model.maxpool = nn.Identity()`; our features are torchvision's with
  `model.fc = nn.Identity()`. Width multipliers other than 1 have no torchvision
  constructor (the names still apply).
- ViT -> timm's `VisionTransformer` (`patch_embed.proj`, `cls_token`, `pos_embed`,
  `blocks.{i}.attn.qkv`, `.attn.proj`, `.norm1/2`, `.mlp.fc1/2`, `norm`): built with
  `class_token=True, global_pool="token"` (or "avg" with `fc_norm=False` for pool "gap":
  our final LayerNorm comes before the pooling), `num_classes=0`,
  LayerNorm eps 1e-6 and exact GELU (timm's defaults); `pos_embed` holds our fixed 2-D
  sin-cos table at the evaluation size, with a zero row for the class token.

- Transformer (post-norm, bidirectional: BERT) -> Hugging Face transformers' `BertModel`
  (`embeddings.*`, `encoder.layer.{i}.attention.self.{query,key,value}`, ...), built with
  `add_pooling_layer=False`, `layer_norm_eps=1e-12`, `hidden_act="gelu"`,
  `max_position_embeddings` = model.max_length; the token-type table is the encoder's own
  (`type_vocab_size` rows, trained on sentence pairs) or, without one, zeros (one
  segment). Our features are the mean of `last_hidden_state` over non-pad positions (pool
  "mean"), or its first position (pool "cls"). Pre-norm and causal (GPT) stacks
  have no BertModel counterpart.

Flax kernels are [in, out] (convolutions [kh, kw, in, out]); torch weights are [out, in]
([out, in, kh, kw]): each is transposed here.
"""
import numpy as np

from ssl_jax.core.errors import ExportError


def _conv(kernel) -> np.ndarray:
  return np.ascontiguousarray(np.transpose(np.asarray(kernel), (3, 2, 0, 1)))


def _dense(kernel) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(kernel).T)


def _batch_norm(out: dict, prefix: str, params: dict, stats: dict) -> None:
  out[f"{prefix}.weight"] = np.asarray(params["scale"])
  out[f"{prefix}.bias"] = np.asarray(params["bias"])
  out[f"{prefix}.running_mean"] = np.asarray(stats["mean"])
  out[f"{prefix}.running_var"] = np.asarray(stats["var"])
  out[f"{prefix}.num_batches_tracked"] = np.asarray(0, np.int64)  # torch keeps a counter


def resnet(variables: dict) -> dict:
  """torchvision names of a ssl_jax ResNet's {"params", "batch_stats"}."""
  params, stats = variables["params"], variables["batch_stats"]
  out = {"conv1.weight": _conv(params["stem_conv"]["kernel"])}
  _batch_norm(out, "bn1", params["stem_bn"], stats["stem_bn"])
  for name in sorted(n for n in params if n.startswith("stage")):
    stage, block = name[len("stage"):].split("_block")
    prefix = f"layer{int(stage)}.{int(block) - 1}"
    for part, values in params[name].items():
      if part.startswith("conv"):
        out[f"{prefix}.{part}.weight"] = _conv(values["kernel"])
      elif part.startswith("bn"):
        _batch_norm(out, f"{prefix}.{part}", values, stats[name][part])
      elif part == "proj_conv":
        out[f"{prefix}.downsample.0.weight"] = _conv(values["kernel"])
      elif part == "proj_bn":
        _batch_norm(out, f"{prefix}.downsample.1", values, stats[name][part])
  return out


def vit(variables: dict, pos_embed: np.ndarray, channels: int) -> dict:
  """timm names of a ssl_jax ViT's params; `pos_embed` [1, 1 + N, width]; `channels` of
  the input images."""
  params = variables["params"]
  kernel = np.asarray(params["patch_embed"]["kernel"])  # [p * p * C, width], (p q c) order
  width = kernel.shape[1]
  patch = int(round((kernel.shape[0] / channels) ** 0.5))
  out = {"cls_token": np.asarray(params["class_token"]).reshape(1, 1, width),
         "pos_embed": np.asarray(pos_embed, np.float32),
         "patch_embed.proj.weight": np.ascontiguousarray(
             kernel.reshape(patch, patch, channels, width).transpose(3, 2, 0, 1)),
         "patch_embed.proj.bias": np.asarray(params["patch_embed"]["bias"])}
  encoder = params["encoder"]
  blocks = sorted((n for n in encoder if n.startswith("block")), key=lambda n: int(n[5:]))
  for index, name in enumerate(blocks):
    block, prefix = encoder[name], f"blocks.{index}"
    parts = {}  # timm fuses query, key and value into one Linear
    for part in ("query", "key", "value"):
      _linear(parts, part, block["attention"][part], width)
    out[f"{prefix}.attn.qkv.weight"] = np.ascontiguousarray(np.concatenate(
        [parts[f"{part}.weight"] for part in ("query", "key", "value")]))
    out[f"{prefix}.attn.qkv.bias"] = np.concatenate(
        [parts[f"{part}.bias"] for part in ("query", "key", "value")])
    _linear(out, f"{prefix}.attn.proj", block["attention"]["out"], width)
    _layer_norm(out, f"{prefix}.norm1", block["norm1"])
    _layer_norm(out, f"{prefix}.norm2", block["norm2"])
    _linear(out, f"{prefix}.mlp.fc1", block["mlp_in"], width)
    _linear(out, f"{prefix}.mlp.fc2", block["mlp_out"], width)
  _layer_norm(out, "norm", encoder["norm"])
  return out


def _layer_norm(out: dict, prefix: str, params: dict) -> None:
  out[f"{prefix}.weight"] = np.asarray(params["scale"])
  out[f"{prefix}.bias"] = np.asarray(params["bias"])


def _linear(out: dict, prefix: str, params: dict, width: int) -> None:
  """A flax Dense, or one projection of MultiHeadDotProductAttention ([in, heads, head_dim]
  or [heads, head_dim, out]), as a torch Linear."""
  kernel = np.asarray(params["kernel"])
  kernel = kernel.reshape(width, -1) if kernel.shape[0] == width else kernel.reshape(-1, width)
  out[f"{prefix}.weight"] = np.ascontiguousarray(kernel.T)
  out[f"{prefix}.bias"] = np.asarray(params["bias"]).reshape(-1)


def bert(variables: dict, model_config) -> dict:
  """transformers BertModel names of a ssl_jax post-norm, bidirectional Transformer."""
  if model_config.get("causal", False) or model_config.get("norm", "post") != "post":
    raise ExportError("--format torch maps BERT-style Transformers (norm post, not causal) "
                      "to transformers' BertModel; this one is pre-norm or causal")
  params = variables["params"]
  embedding = np.asarray(params["token_embed"]["embedding"])
  width = embedding.shape[1]
  out = {"embeddings.word_embeddings.weight": embedding,
         "embeddings.position_embeddings.weight": np.asarray(params["position_embed"]),
         # A pair-trained encoder's token types (type_vocab_size rows), else one segment.
         "embeddings.token_type_embeddings.weight": (
             np.asarray(params["type_embed"]["embedding"]) if "type_embed" in params
             else np.zeros((2, width), np.float32))}
  _layer_norm(out, "embeddings.LayerNorm", params["embed_norm"])
  blocks = sorted((n for n in params if n.startswith("block")), key=lambda n: int(n[5:]))
  for index, name in enumerate(blocks):
    block, prefix = params[name], f"encoder.layer.{index}"
    for part in ("query", "key", "value"):
      _linear(out, f"{prefix}.attention.self.{part}", block["attention"][part], width)
    _linear(out, f"{prefix}.attention.output.dense", block["attention"]["out"], width)
    _layer_norm(out, f"{prefix}.attention.output.LayerNorm", block["norm1"])
    _linear(out, f"{prefix}.intermediate.dense", block["mlp_in"], width)
    _linear(out, f"{prefix}.output.dense", block["mlp_out"], width)
    _layer_norm(out, f"{prefix}.output.LayerNorm", block["norm2"])
  return out


def state_dict(variables: dict, model_config, pos_embed: np.ndarray | None = None,
               channels: int | None = None) -> dict:
  """The torch state dict (numpy values) of a backbone built from `model_config`."""
  name = model_config.name
  if name == "resnet":
    return resnet(variables)
  if name == "transformer":
    return bert(variables, model_config)
  if name == "vit":
    if pos_embed is None or channels is None:
      raise ExportError("a ViT's torch export needs its position table and input channels")
    return vit(variables, pos_embed, channels)
  raise ExportError(f"--format torch knows ResNet (torchvision), ViT (timm) and BERT "
                    f"(transformers) backbones, not "
                    f"model.name={name!r}; export the default format and map the names yourself")

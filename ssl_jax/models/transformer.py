"""Transformer over token ids: BERT's encoder and GPT's decoder from one set of blocks.

`Transformer(...)(tokens, train)` maps int32 token ids [B, L] (0 = [PAD],
ssl_jax/data/text.py) to pooled features [B, width]: the mean of the non-pad positions'
final hidden states ("mean"), the first position's, [CLS] ("cls"), or the last non-pad
position's ("last", a causal model's summary of the whole text). The pieces are methods
so the language-model objectives can use them directly:

  hidden = model.apply(v, tokens, train, method=Transformer.hidden)   # [B, L, width]
  logits = model.apply(v, hidden, method=Transformer.logits)          # [B, L, vocab]

Embeddings: learned token and position embeddings (N(0, 0.02)), summed, plus BERT's
token-type embeddings when `type_vocab_size` > 0 (segment A = 0, B = 1 of a sentence
pair; 0 when no `token_types` are given). Attention masks: a position never attends to a
[PAD] key; `causal` adds the lower-triangular mask (a position sees itself and earlier
ones only); `segments` (optional int ids [B, L], ssl_jax/data/sequences.py) keeps
attention inside one packed text, whose `positions` (optional [B, L]) start from 0, so
that a packed text is computed as it would be alone. Blocks are `norm="pre"` (GPT-2:
x + f(LN(x)), a final LayerNorm) or `norm="post"` (BERT: LN(x + f(x)), a LayerNorm on the
embeddings); GELU MLP of `mlp_dim`; dropout `dropout_rate` on embeddings, attention weights and
residual branches while training (the "dropout" rng). The output layer is tied: logits
are hidden @ token_embedding^T + a bias. `dtype` is the compute dtype of the matmuls;
LayerNorm, softmax and logits are float32.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import ml_collections

from ssl_jax.core import validate
from ssl_jax.core.errors import ConfigError
from ssl_jax.models.attention import HEADS_MAJOR
from ssl_jax.models import remat as remat_lib

PAD = 0
# name: (width, depth, heads, mlp_dim). "base" is BERT-base and GPT-2 small's shape;
# "mini" is the bert_mlm peer's (ssl_jax/tools/bench.py).
PRESETS = {"tiny": (64, 2, 2, 256), "mini": (256, 4, 4, 1024), "small": (512, 8, 8, 2048),
           "base": (768, 12, 12, 3072)}
POOLS = ("mean", "cls", "last")
NORMS = ("pre", "post")
LN_EPSILON = 1e-12  # BERT's; GPT-2 uses 1e-5, a difference below float32 LayerNorm noise
# On CPU, split the host into one device per core (training/cpu_devices.py), as for a ViT.
CPU_DEVICE_PER_CORE = True
normal = nn.initializers.normal(0.02)


# What a data layout may add beside `tokens` (ssl_jax/data/sequences.py): the keyword
# arguments of `Transformer.hidden`.
SEQUENCE_INPUTS = ("segments", "positions", "token_types")


def sequence_inputs(batch) -> dict:
  """The batch's entries among SEQUENCE_INPUTS, for `Transformer.hidden(tokens, ...)`."""
  return {k: batch[k] for k in SEQUENCE_INPUTS if k in batch}


def attention_mask(tokens: jax.Array, causal: bool, segments: jax.Array | None = None) -> jax.Array:
  """bool [B, 1, L, L]: query i may attend to key j."""
  mask = (tokens != PAD)[:, None, None, :]
  length = tokens.shape[1]
  if causal:
    mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
  if segments is not None:
    mask = mask & (segments[:, None, :, None] == segments[:, None, None, :])
  return mask


class TextBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  norm: str = "pre"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool):
    width = x.shape[-1]
    layer_norm = lambda name: nn.LayerNorm(LN_EPSILON, dtype=jnp.float32,
                                           param_dtype=self.param_dtype, name=name)
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype,
                                            kernel_init=normal, name=name)
    drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    attention = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=normal, dropout_rate=self.dropout_rate, deterministic=not train,
        name="attention", **HEADS_MAJOR)
    mlp = lambda y: dense(width, "mlp_out")(nn.gelu(dense(self.mlp_dim, "mlp_in")(y), approximate=False))
    if self.norm == "pre":
      x = x + drop(attention(layer_norm("norm1")(x), mask=mask))
      return x + drop(mlp(layer_norm("norm2")(x)))
    x = layer_norm("norm1")(x + drop(attention(x, mask=mask)))
    return layer_norm("norm2")(x + drop(mlp(x)))


class Transformer(nn.Module):
  """Token ids [B, L] -> [B, width] features (see the module docstring)."""
  vocab_size: int
  max_length: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  causal: bool = False
  norm: str = "post"
  dropout_rate: float = 0.0
  pool: str = "mean"
  type_vocab_size: int = 0    # > 0: token-type embeddings (BERT's sentence pairs)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"         # per-block rematerialisation (models/remat.py)

  @property
  def feature_dim(self) -> int:
    return self.width

  def setup(self):
    if self.pool not in POOLS or self.norm not in NORMS:
      raise ConfigError(f"Transformer pool={self.pool!r} (one of {POOLS}), norm={self.norm!r} "
                       f"(one of {NORMS})")
    if self.width % self.num_heads:
      raise ConfigError(f"model.width={self.width} is not divisible by model.num_heads={self.num_heads}")
    self.token_embed = nn.Embed(self.vocab_size, self.width, embedding_init=normal,
                                param_dtype=self.param_dtype, name="token_embed")
    self.position_embed = self.param("position_embed", normal, (self.max_length, self.width),
                                     self.param_dtype)
    self.type_embed = (nn.Embed(self.type_vocab_size, self.width, embedding_init=normal,
                                param_dtype=self.param_dtype, name="type_embed")
                       if self.type_vocab_size else None)
    self.embed_norm = (nn.LayerNorm(LN_EPSILON, dtype=jnp.float32, param_dtype=self.param_dtype,
                                    name="embed_norm") if self.norm == "post" else None)
    self.final_norm = (nn.LayerNorm(LN_EPSILON, dtype=jnp.float32, param_dtype=self.param_dtype,
                                    name="final_norm") if self.norm == "pre" else None)
    self.embed_dropout = nn.Dropout(self.dropout_rate)
    block = remat_lib.wrap(TextBlock, self.remat, static_argnums=(3,))  # train
    self.blocks = [block(self.num_heads, self.mlp_dim, self.norm, self.dropout_rate,
                         self.dtype, self.param_dtype, name=f"block{i}")
                   for i in range(self.depth)]
    self.output_bias = self.param("output_bias", nn.initializers.zeros, (self.vocab_size,),
                                  self.param_dtype)

  def hidden(self, tokens, train: bool, segments=None, positions=None, token_types=None):
    """Final hidden states [B, L, width], float32. `segments`, `positions`: a packed
    batch's (each text attends to itself, from position 0); `token_types`: a sentence
    pair's segment ids (needs type_vocab_size > 0)."""
    length = tokens.shape[1]
    if length > self.max_length:
      raise ConfigError(f"{length} tokens exceed model.max_length={self.max_length}: set "
                        "data.max_length <= model.max_length")
    x = self.token_embed(tokens) + (self.position_embed[None, :length] if positions is None
                                    else jnp.take(self.position_embed, positions, axis=0))
    if self.type_embed is not None:
      x = x + self.type_embed(jnp.zeros_like(tokens) if token_types is None else token_types)
    elif token_types is not None:
      raise ConfigError("a batch with token_types (sentence pairs) needs "
                        "model.type_vocab_size >= 2")
    if self.embed_norm is not None:
      x = self.embed_norm(x)
    x = self.embed_dropout(x, deterministic=not train).astype(self.dtype)
    mask = attention_mask(tokens, self.causal, segments)
    for block in self.blocks:
      x = block(x, mask, train)
    if self.final_norm is not None:
      x = self.final_norm(x)
    return x.astype(jnp.float32)

  def logits(self, hidden):
    """Tied output layer: [..., width] -> [..., vocab] float32."""
    embedding = self.token_embed.embedding.astype(jnp.float32)
    return hidden.astype(jnp.float32) @ embedding.T + self.output_bias.astype(jnp.float32)

  def pooled(self, hidden, tokens):
    valid = (tokens != PAD).astype(hidden.dtype)
    if self.pool == "cls":
      return hidden[:, 0]
    if self.pool == "last":
      last = jnp.maximum(jnp.sum(valid, axis=1).astype(jnp.int32) - 1, 0)
      return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    return jnp.sum(hidden * valid[..., None], axis=1) / jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1.0)

  def __call__(self, tokens, train: bool):
    return self.pooled(self.hidden(tokens, train), tokens)


def default_config(variant: str, data: ml_collections.ConfigDict, causal: bool,
                   **fields) -> ml_collections.ConfigDict:
  """config.model for a Transformer sized to the data's vocabulary and sequence length:
  BERT (Devlin et al. 2019; causal=False: post-norm, mean-pooled) or GPT (Radford et al.
  2019; causal=True: pre-norm, the last token's state)."""
  model = ml_collections.ConfigDict()
  model.name = "transformer"
  model.variant = variant               # tiny | mini | small | base: width, depth, heads, MLP
  model.vocab_size = data.vocab_size
  model.max_length = data.max_length
  model.width = 0                       # > 0 replaces the preset's
  model.depth = 0
  model.num_heads = 0
  model.mlp_dim = 0
  model.causal = causal                 # True: each position sees itself and earlier ones
  model.norm = "pre" if causal else "post"  # GPT-2 pre-norm; BERT post-norm
  model.dropout_rate = 0.1              # both papers'
  model.pool = "last" if causal else "mean"  # features for probes
  model.type_vocab_size = 0             # 2: BERT's token types (data.layout nsp/sop_pairs)
  model.dtype = "float32"
  model.remat = "none"                  # per-block rematerialisation: none | full | dots
  validate.strict_update(model, fields, "model")
  model.lock()
  return model


def smoke(model: ml_collections.ConfigDict) -> None:
  """Shrinks config.model in place to compile in seconds: one 16-wide block, 32 tokens
  (the data section's max_length and vocabulary follow in experiments' smoke mode)."""
  model.depth, model.width, model.num_heads, model.mlp_dim = 1, 16, 2, 32
  model.max_length = 32


def check_config(model: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first config.model field out of range."""
  if model.variant not in PRESETS:
    raise ConfigError(f"model.variant={model.variant!r}; expected one of {sorted(PRESETS)}")
  width, _, heads, _ = PRESETS[model.variant]
  for name in ("width", "depth", "num_heads", "mlp_dim"):
    validate.number(f"model.{name}", model.get(name, 0), low=0, integer=True)
  validate.number("model.vocab_size", model.vocab_size, low=1, integer=True)
  validate.number("model.max_length", model.max_length, low=1, integer=True)
  validate.number("model.type_vocab_size", model.get("type_vocab_size", 0), low=0, integer=True)
  validate.number("model.dropout_rate", model.dropout_rate, low=0, high=1, high_open=True)
  if model.pool not in POOLS:
    raise ConfigError(f"model.pool={model.pool!r}; expected one of {POOLS}")
  if model.norm not in NORMS:
    raise ConfigError(f"model.norm={model.norm!r}; expected one of {NORMS}")
  width, heads = model.get("width") or width, model.get("num_heads") or heads
  if width % heads:
    raise ConfigError(f"model.width={width} is not divisible by model.num_heads={heads}")
  remat_lib.check(model.get("remat", "none"))


def build(model_config) -> Transformer:
  width, depth, heads, mlp_dim = PRESETS[model_config.variant]
  return Transformer(
      vocab_size=model_config.vocab_size, max_length=model_config.max_length,
      width=model_config.get("width") or width, depth=model_config.get("depth") or depth,
      num_heads=model_config.get("num_heads") or heads, mlp_dim=model_config.get("mlp_dim") or mlp_dim,
      causal=model_config.causal, norm=model_config.norm, dropout_rate=model_config.dropout_rate,
      pool=model_config.pool, type_vocab_size=model_config.get("type_vocab_size", 0),
      dtype=jnp.dtype(model_config.dtype),
      param_dtype=jnp.dtype(model_config.get("param_dtype", "float32")),
      remat=model_config.get("remat", "none"))


def num_layers(model: Transformer) -> int:
  """Layers for layer-wise lr decay: the embeddings (0), the blocks (1..depth); the head
  of a fine-tuned classifier is depth + 1."""
  return model.depth + 1


def layer_id(model: Transformer, path: tuple[str, ...]) -> int:
  name = path[0] if path else ""
  if name.startswith("block"):
    return int(name[len("block"):]) + 1
  if name in ("final_norm", "output_bias"):
    return model.depth
  return 0

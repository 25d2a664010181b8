"""Vision Transformer (Dosovitskiy et al. 2021) with fixed 2-D sin-cos position embeddings,
as MAE (He et al. 2022) and MoCo v3 use it.

`ViT(...)(images, train)` maps NHWC images [B, H, W, C] to pooled features [B, width]:
the class token ("token") or the mean of the patch tokens ("gap") after the final
LayerNorm. The image side must be a multiple of the patch size; the position
embeddings follow the grid of whatever image it is given, so one model runs at several
resolutions (multi-crop, 28 vs 24-pixel crops).

The pieces are methods of one module, so a masked objective can run them separately:

  tokens = vit.apply(v, images, method=ViT.embed)          # [B, N, D] patches + positions
  tokens = take_along_axis(tokens, visible, axis=1)        # MAE: keep 25% of them
  hidden = vit.apply(v, tokens, train, method=ViT.transform)  # [B, 1 + n, D], normed

Pre-norm blocks: x + DropPath(MHSA(LN(x))), then x + DropPath(MLP(LN(x))); LayerNorm eps
1e-6; GELU MLP of `mlp_ratio` x width; xavier-uniform kernels and zero biases, class
token N(0, 0.02), as in MAE's code. Drop path (stochastic depth) grows linearly from 0
at the first block to `drop_path_rate` at the last and draws from the "dropout" rng.
`dtype` is the compute dtype of the matmuls; parameters are `param_dtype`; LayerNorm,
softmax and the pooled output are float32.
"""
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import ml_collections

from ssl_jax.core import validate
from ssl_jax.core.errors import ConfigError
from ssl_jax.models.attention import HEADS_MAJOR
from ssl_jax.models import remat as remat_lib

# name: (width, depth, heads). Ti/S/B as in DeiT and the ViT paper; "tiny-test" for tests.
PRESETS = {"Ti": (192, 12, 3), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16)}
POOLS = ("token", "gap")
LN_EPSILON = 1e-6
# On CPU, split the host into one device per core (training/cpu_devices.py): a ViT's
# operations are too small for XLA:CPU to keep several cores busy inside each.
CPU_DEVICE_PER_CORE = True
xavier = nn.initializers.xavier_uniform()


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p)(W/p), p*p*C], patches in row-major grid order."""
  return einops.rearrange(images, "b (h p) (w q) c -> b (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(patches: jax.Array, patch_size: int, channels: int) -> jax.Array:
  """The inverse of `patchify` for a square grid."""
  side = int(round(patches.shape[1] ** 0.5))
  return einops.rearrange(patches, "b (h w) (p q c) -> b (h p) (w q) c", h=side, w=side,
                          p=patch_size, q=patch_size, c=channels)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """[len(positions), dim]: sin(pos * w_i) then cos(pos * w_i), w_i = 10000^(-2i/dim)."""
  if dim % 2:
    raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
  angles = np.outer(positions.astype(np.float64), omega)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
  """[grid_h * grid_w, dim] fixed position embeddings for a row-major patch grid: the
  first half of each vector encodes the patch's column, the second half its row (the
  order of MAE's get_2d_sincos_pos_embed)."""
  if dim % 4:
    raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
  rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
  return np.concatenate([sincos_1d(dim // 2, cols.reshape(-1)),
                         sincos_1d(dim // 2, rows.reshape(-1))], axis=1).astype(np.float32)


class DropPath(nn.Module):
  """Drops the whole residual branch of a sample with probability `rate` (train only)."""
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * mask.astype(x.dtype) / keep


class Block(nn.Module):
  """One pre-norm Transformer encoder block."""
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    width = x.shape[-1]
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype,
                                            kernel_init=xavier, name=name)
    norm = lambda name: nn.LayerNorm(LN_EPSILON, dtype=jnp.float32, param_dtype=self.param_dtype,
                                     name=name)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=xavier, deterministic=True, name="attention",
        **HEADS_MAJOR)(norm("norm1")(x))
    x = x + DropPath(self.drop_path, name="drop_path1")(y, train)
    y = dense(int(width * self.mlp_ratio), "mlp_in")(norm("norm2")(x))
    y = dense(width, "mlp_out")(nn.gelu(y, approximate=False))
    return x + DropPath(self.drop_path, name="drop_path2")(y, train)


class Encoder(nn.Module):
  """`depth` blocks then a final LayerNorm; returns float32 tokens."""
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x, train: bool):
    block = remat_lib.wrap(Block, self.remat, static_argnums=(2,))
    for i in range(self.depth):
      rate = self.drop_path_rate * i / max(self.depth - 1, 1)
      x = block(self.num_heads, self.mlp_ratio, rate, self.dtype, self.param_dtype,
                name=f"block{i}")(x, train)
    return nn.LayerNorm(LN_EPSILON, dtype=jnp.float32, param_dtype=self.param_dtype,
                        name="norm")(x)


class ViT(nn.Module):
  """ViT backbone: NHWC images -> [B, width] features (see the module docstring)."""
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  pool: str = "token"
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"         # per-block rematerialisation (models/remat.py)

  @property
  def feature_dim(self) -> int:
    return self.width

  def setup(self):
    if self.pool not in POOLS:
      raise ConfigError(f"model.pool={self.pool!r}; expected one of {POOLS}")
    if self.width % self.num_heads:
      raise ConfigError(f"model.width={self.width} is not divisible by model.num_heads={self.num_heads}")
    self.patch_embed = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                                kernel_init=xavier, name="patch_embed")
    self.class_token = self.param("class_token", nn.initializers.normal(0.02),
                                  (1, 1, self.width), self.param_dtype)
    self.encoder = Encoder(self.depth, self.num_heads, self.mlp_ratio, self.drop_path_rate,
                           self.dtype, self.param_dtype, self.remat, name="encoder")

  def grid(self, images) -> tuple[int, int]:
    height, width = images.shape[1:3]
    if height % self.patch_size or width % self.patch_size:
      raise ConfigError(f"image of {height}x{width} pixels is not a whole number of "
                       f"{self.patch_size}-pixel patches")
    return height // self.patch_size, width // self.patch_size

  def embed(self, images):
    """Patch tokens with their position embeddings, [B, N, width], no class token."""
    grid = self.grid(images)
    tokens = self.patch_embed(patchify(images.astype(self.dtype), self.patch_size))
    return tokens + jnp.asarray(sincos_2d(self.width, *grid), tokens.dtype)

  def transform(self, tokens, train: bool):
    """Prepends the class token (its position embedding is zero) and runs the blocks."""
    cls = jnp.broadcast_to(self.class_token.astype(tokens.dtype), (tokens.shape[0], 1, self.width))
    return self.encoder(jnp.concatenate([cls, tokens], axis=1), train)

  def pooled(self, hidden):
    return hidden[:, 0] if self.pool == "token" else jnp.mean(hidden[:, 1:], axis=1)

  def __call__(self, images, train: bool):
    return self.pooled(self.transform(self.embed(images), train))


def default_config(variant: str, patch_size: int, **fields) -> ml_collections.ConfigDict:
  """config.model for a ViT (Dosovitskiy et al. 2021, arXiv:2010.11929): a preset (Ti | S |
  B | L) and patch size; width, depth or num_heads > 0 replace the preset's."""
  model = ml_collections.ConfigDict()
  model.name = "vit"                    # module in ssl_jax/models/
  model.variant = variant               # Ti | S | B | L: width, depth, heads
  model.patch_size = patch_size         # pixels per patch side; the image side must be a multiple
  model.width = 0                       # > 0: replaces the preset's token width
  model.depth = 0                       # > 0: replaces the preset's number of blocks
  model.num_heads = 0                   # > 0: replaces the preset's attention heads
  model.mlp_ratio = 4.0                 # MLP hidden width / token width
  model.pool = "token"                  # features: class token ("token") or mean of patches ("gap")
  model.drop_path_rate = 0.0            # stochastic depth at the last block (0 at the first)
  model.dtype = "float32"               # compute dtype of the matmuls
  model.remat = "none"                  # per-block rematerialisation: none | full | dots
  validate.strict_update(model, fields, "model")
  model.lock()
  return model


def smoke(model: ml_collections.ConfigDict) -> None:
  """Shrinks config.model in place to compile in seconds: one 16-wide block of 2 heads."""
  model.depth, model.width, model.num_heads = 1, 16, 2


def check_config(model: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first config.model field out of range."""
  get = model.get
  if get("variant", "S") not in PRESETS:
    raise ConfigError(f"model.variant={get('variant')!r}; expected one of {sorted(PRESETS)}")
  width, _, heads = PRESETS[get("variant", "S")]
  for name in ("width", "depth", "num_heads"):
    validate.number(f"model.{name}", get(name, 0), low=0, integer=True)
  validate.number("model.patch_size", get("patch_size", 16), low=1, integer=True)
  validate.number("model.mlp_ratio", get("mlp_ratio", 4.0), low=0, low_open=True)
  validate.number("model.drop_path_rate", get("drop_path_rate", 0.0), low=0, high=1, high_open=True)
  if get("pool", "token") not in POOLS:
    raise ConfigError(f"model.pool={get('pool')!r}; expected one of {POOLS}")
  width, heads = get("width", 0) or width, get("num_heads", 0) or heads
  if width % heads:
    raise ConfigError(f"model.width={width} is not divisible by model.num_heads={heads}")
  if width % 4:
    raise ConfigError(f"model.width={width} must be a multiple of 4 (the 2-D sin-cos "
                      "position embedding splits it in four)")
  remat_lib.check(get("remat", "none"))


def build(model_config) -> ViT:
  """ViT from a ConfigDict: `variant` (Ti | S | B | L) sets width, depth and heads unless
  `width`, `depth` or `num_heads` is set (> 0); `patch_size`, `pool`, `mlp_ratio`,
  `drop_path_rate`, `dtype` are optional."""
  get = model_config.get
  variant = get("variant", "S")
  if variant not in PRESETS:
    raise ConfigError(f"model.variant={variant!r}; expected one of {sorted(PRESETS)}")
  width, depth, heads = PRESETS[variant]
  return ViT(patch_size=get("patch_size", 16), width=get("width", 0) or width,
             depth=get("depth", 0) or depth, num_heads=get("num_heads", 0) or heads,
             mlp_ratio=get("mlp_ratio", 4.0), pool=get("pool", "token"),
             drop_path_rate=get("drop_path_rate", 0.0), dtype=jnp.dtype(get("dtype", "float32")),
             remat=get("remat", "none"))


def num_layers(model: ViT) -> int:
  """Layers for layer-wise lr decay: the embeddings (0), each block (1..depth), then the
  final norm and anything on top (depth + 1)."""
  return model.depth + 1


def layer_id(model: ViT, path: tuple[str, ...]) -> int:
  """The layer (see num_layers) of the parameter at `path` in a ViT's params tree."""
  if path[0] in ("patch_embed", "class_token"):
    return 0
  if path[0] == "encoder" and path[1].startswith("block"):
    return int(path[1][len("block"):]) + 1
  return model.depth + 1

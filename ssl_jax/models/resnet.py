"""ResNet backbones (He et al. 2016, torchvision v1.5 layout) returning pooled features.

`ResNet(...)(images, train)` maps NHWC images to [batch, feature_dim] globally
average-pooled features; there is no classifier. The convolution strategy is a field
(`conv_impl`, see `ssl_jax.models.conv`): "auto" uses XLA's convolution on GPU/TPU, and
on CPU oneDNN's (`ssl_jax.models.onednn`) for a program on one device, else XLA's "fast"
path. All strategies compute the same function and share the parameter layout (HWIO
`kernel`, like `flax.linen.Conv`), so a checkpoint trained with one loads into the
others. On CPU the XLA flag `conv.CPU_XLA_FLAGS` makes XLA's convolutions in a ResNet
step ~1.4-1.7x faster; importing `ssl_jax` before jax sets it (see ssl_jax/__init__.py),
or pass `conv.compiler_options()` to a `jax.jit` of your own.

BatchNorm uses the statistics of the batch it is given. Under `jax.jit` over a batch
sharded on a mesh, that is the global batch: XLA inserts the cross-device reductions, so
no axis_name is needed (or wanted).
"""

from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
from jax import ad_checkpoint, lax

import ml_collections

from ssl_jax.core import validate
from ssl_jax.core.errors import ConfigError
from ssl_jax.models import conv as conv_lib, remat as remat_lib

# 10 (one basic block per stage) is the smallest member of the family: smoke runs and
# tests use it, since its programs compile in about half the time of ResNet-18's.
VALID_DEPTHS = {10: ((1, 1, 1, 1), False), 18: ((2, 2, 2, 2), False),
                34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True)}

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def base_width(width_multiplier: float) -> int:
  """Channels of the stem and of the first stage: round(64 * width), at least 1."""
  return max(1, int(round(64 * width_multiplier)))


def feature_dim(width_multiplier: float = 1.0, bottleneck: bool = False) -> int:
  """Size of the pooled feature vector: 512*width (basic), 2048*width (bottleneck)."""
  return base_width(width_multiplier) * 8 * (4 if bottleneck else 1)


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last, with flax.linen.BatchNorm's variables and
  semantics (params scale/bias, batch_stats mean/var; biased batch variance; running =
  momentum * running + (1 - momentum) * batch), computed as one-pass statistics and a
  folded scale and shift: ResNet-18 train steps run 7-9% faster on XLA:CPU than with
  nn.BatchNorm. Statistics are taken in float32 whatever the compute dtype."""
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  scale_init: Callable = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axes)
      var = jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.0)
      if not self.is_initializing():
        decay = self.momentum
        running_mean.value = (decay * running_mean.value
                              + (1 - decay) * lax.stop_gradient(mean))
        running_var.value = (decay * running_var.value
                             + (1 - decay) * lax.stop_gradient(var))
    multiplier = scale * lax.rsqrt(var + self.epsilon)
    shift = bias - mean * multiplier
    return x.astype(self.dtype) * multiplier.astype(self.dtype) + shift.astype(self.dtype)


class Conv(nn.Module):
  """Bias-free 2-D convolution with torch-style symmetric padding (k // 2)."""
  features: int
  kernel_size: int
  strides: int = 1
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", conv_kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    padding = ((k // 2, k // 2), (k // 2, k // 2))
    y = conv_lib.conv2d(x.astype(self.dtype), kernel.astype(self.dtype),
                        (self.strides, self.strides), padding, self.conv_impl)
    return ad_checkpoint.checkpoint_name(y, remat_lib.CONV)  # what remat="dots" keeps


class ResidualBlock(nn.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) block; the stride sits on the 3x3."""
  features: int
  strides: int
  bottleneck: bool
  norm: Any
  conv: Any
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    last_scale_init = (nn.initializers.zeros if self.zero_init_residual
                       else nn.initializers.ones)
    if self.bottleneck:
      out_features = 4 * self.features
      y = nn.relu(self.norm(name="bn1")(self.conv(self.features, 1, name="conv1")(x)))
      y = self.conv(self.features, 3, self.strides, name="conv2")(y)
      y = nn.relu(self.norm(name="bn2")(y))
      y = self.conv(out_features, 1, name="conv3")(y)
      y = self.norm(scale_init=last_scale_init, name="bn3")(y)
    else:
      out_features = self.features
      y = self.conv(self.features, 3, self.strides, name="conv1")(x)
      y = nn.relu(self.norm(name="bn1")(y))
      y = self.conv(self.features, 3, name="conv2")(y)
      y = self.norm(scale_init=last_scale_init, name="bn2")(y)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_features:
      shortcut = self.conv(out_features, 1, self.strides, name="proj_conv")(x)
      shortcut = self.norm(name="proj_bn")(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet backbone: NHWC images [B, H, W, C] -> pooled features [B, feature_dim].

  stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
  bottleneck: bottleneck blocks (ResNet-50 and up) instead of basic blocks.
  width_multiplier: scales every channel count; stage i has round(64*w) * 2**i channels.
  small_image_stem: 3x3 stride-1 stem conv and no max-pool (CIFAR / 28x28 inputs);
    otherwise the ImageNet stem, 7x7 stride-2 conv + 3x3 stride-2 max-pool.
  small_stem_stride: stride of the small-image stem conv; 2 quarters the cost of every
    later layer (a budget option for CPU runs on 28x28 images).
  conv_impl: "auto" | "onednn" | "xla" | "fast" | "im2col" (see ssl_jax.models.conv).
  bn_momentum: running-stat decay, flax convention (0.9 == torch's momentum=0.1).
  zero_init_residual: start each block's last BN scale at 0 (block = identity).
  dtype: computation dtype (parameters stay float32).
  remat: per-block rematerialisation, "none" | "full" | "dots" (models/remat.py).
  """
  stage_sizes: Sequence[int]
  bottleneck: bool
  width_multiplier: float = 1.0
  small_image_stem: bool = False
  small_stem_stride: int = 1
  conv_impl: str = "auto"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  remat: str = "none"

  @property
  def feature_dim(self) -> int:
    return feature_dim(self.width_multiplier, self.bottleneck)

  @nn.compact
  def __call__(self, x, train: bool):
    conv_impl = conv_lib.resolve_impl(self.conv_impl)

    def conv(features, kernel_size, strides=1, name=None):
      return Conv(features, kernel_size, strides, conv_impl, self.dtype, name=name)

    def norm(scale_init=nn.initializers.ones, name=None):
      return BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=self.bn_epsilon, dtype=self.dtype, scale_init=scale_init,
                       name=name)

    width = base_width(self.width_multiplier)
    x = x.astype(self.dtype)
    if self.small_image_stem:
      x = conv(width, 3, self.small_stem_stride, name="stem_conv")(x)
    else:
      x = conv(width, 7, 2, name="stem_conv")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    if not self.small_image_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block_class = remat_lib.wrap(ResidualBlock, self.remat, static_argnums=())
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = block_class(width * 2**stage, strides, self.bottleneck, norm, conv,
                          self.zero_init_residual,
                          name=f"stage{stage + 1}_block{block + 1}")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # float32 features whatever the dtype


def default_config(depth: int = 18, width_multiplier: float = 1.0, small_image_stem: bool = True,
                   small_stem_stride: int = 1) -> ml_collections.ConfigDict:
  """config.model for a ResNet (He et al. 2016, arXiv:1512.03385)."""
  model = ml_collections.ConfigDict()
  model.name = "resnet"                 # module in ssl_jax/models/
  model.depth = depth                   # 10, 18, 34 or 50
  model.width_multiplier = width_multiplier  # scales every channel count
  model.small_image_stem = small_image_stem  # 3x3 stem conv, no max-pool (28/32-pixel inputs)
  model.small_stem_stride = small_stem_stride  # 2: halves the stem's output side (cheaper)
  model.zero_init_residual = False      # each block's last BN scale starts at 0 (Goyal et al.)
  model.dtype = "float32"               # compute dtype of convolutions (config.precision sets it)
  model.remat = "none"                  # per-block rematerialisation: none | full | dots
  model.lock()
  return model


def smoke(model: ml_collections.ConfigDict) -> None:
  """Shrinks config.model in place to compile in seconds: ResNet-10 at 1/16 width."""
  model.depth = 10
  model.width_multiplier = 0.0625


def check_config(model: ml_collections.ConfigDict) -> None:
  """ConfigError naming the first config.model field out of range."""
  stage_layout(model.depth)
  validate.number("model.width_multiplier", model.get("width_multiplier", 1.0), low=0,
                  low_open=True)
  validate.number("model.small_stem_stride", model.get("small_stem_stride", 1), low=1,
                  integer=True)
  remat_lib.check(model.get("remat", "none"))
  conv_lib.resolve_impl(model.get("conv_impl", "auto"))


def stage_layout(depth: int) -> Tuple[Tuple[int, ...], bool]:
  """(stage_sizes, bottleneck) for a ResNet depth."""
  if depth not in VALID_DEPTHS:
    raise ConfigError(f"model.depth={depth!r} is not a ResNet depth; valid depths are "
                      f"{sorted(VALID_DEPTHS)}")
  return VALID_DEPTHS[depth]


def build(model_config) -> ResNet:
  """ResNet from a ConfigDict with depth, width_multiplier, small_image_stem and the
  optional conv_impl, bn_momentum, zero_init_residual, dtype, remat."""
  stage_sizes, bottleneck = stage_layout(model_config.depth)
  get = model_config.get
  return ResNet(stage_sizes=stage_sizes, bottleneck=bottleneck,
                width_multiplier=get("width_multiplier", 1.0),
                small_image_stem=get("small_image_stem", False),
                small_stem_stride=get("small_stem_stride", 1),
                conv_impl=get("conv_impl", "auto"),
                bn_momentum=get("bn_momentum", 0.9),
                zero_init_residual=get("zero_init_residual", False),
                dtype=jnp.dtype(get("dtype", "float32")),
                remat=get("remat", "none"))


def num_layers(model: ResNet) -> int:
  """Layers for layer-wise lr decay: the stem (0), each residual block in order
  (1..blocks), then anything on top (blocks + 1)."""
  return sum(model.stage_sizes) + 1


def layer_id(model: ResNet, path: tuple[str, ...]) -> int:
  """The layer (see num_layers) of the parameter at `path` in a ResNet's params tree."""
  name = path[0]
  if name.startswith("stem"):
    return 0
  if name.startswith("stage"):
    stage, block = (int(part) for part in name[len("stage"):].split("_block"))
    return sum(model.stage_sizes[:stage - 1]) + block
  return sum(model.stage_sizes) + 1

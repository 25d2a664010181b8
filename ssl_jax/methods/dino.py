"""DINO: "Emerging Properties in Self-Supervised Vision Transformers", Caron, Touvron,
Misra, Jégou, Mairal, Bojanowski, Joulin, ICCV 2021 (arXiv:2104.14294), Algorithm 1 and
the official code (github.com/facebookresearch/dino, main_dino.py).

A student (backbone + DINO head) matches the softmax of a momentum teacher across crops
of one image. View groups: `global_crops` (count 2 in the paper) and the optional
`local_crops` (count N, smaller crops). The teacher sees only the global crops; the
student sees all of them; every teacher crop is the target of every other student crop
(losses.dino_loss). Collapse is avoided by centring (a running mean of the teacher
logits, subtracted before the softmax) and sharpening (teacher temperature 0.04 -> 0.07,
below the student's 0.1); `teacher_entropy` near `log_k` means a uniform teacher, near 0 a
one-hot one: either is collapse.

params: {"backbone", "head"} of the student.
method_state: {"batch_stats": student BN statistics,
               "teacher": {"params", "batch_stats"}, "center": [1, K]}.

Choices the contract leaves open, and what the official code does:
- Crops of different sizes are separate arrays, so the student's backbone runs once on
  the global crops and once on the local crops, and the head once on all their features
  together (ssl_jax/methods/lib/multicrop.py, the official MultiCropWrapper). Its BatchNorm running
  statistics take both updates in that order (flax hands the second call the first call's
  new values), as PyTorch's BatchNorm does for the official two backbone calls.
- The teacher runs in train mode (batch statistics), as in the official code, which
  never calls teacher.eval(); its running statistics come from its own forward passes,
  and the EMA moves only its params.
- The last-layer freeze (official `freeze_last_layer`, the first epoch) is a
  stop-gradient on the last layer's weights while step < freeze_last_layer_steps: their
  gradient is exactly zero, but the optimizer still applies weight decay to them (the
  official code skips their update entirely). With a zero gradient every optimizer here
  moves v along v itself, so v / ||v||, and the network's function, are unchanged; only
  ||v|| shrinks, which raises v's effective learning rate once the freeze ends.
- The teacher temperature warms up per step (start at step 0, end at
  warmup_teacher_temperature_steps), not per epoch.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import diagnostics, losses, multicrop, teacher


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.head_hidden_dims = (2048, 2048)     # hidden widths of the head MLP (paper: 2048, 2048)
  config.bottleneck_dim = 256                # width before the l2-normalisation (paper: 256)
  config.output_dim = 65536                  # K, prototypes of the softmax (paper: 65536; RN50 run 60000)
  config.use_bn_in_head = False              # BN in the head MLP (official: False for ViT, True for RN50)
  config.student_temperature = 0.1           # student softmax temperature (paper: 0.1)
  config.teacher_temperature = 0.07          # teacher temperature after the warm-up (paper: 0.07)
  config.warmup_teacher_temperature = 0.04   # teacher temperature at step 0 (paper: 0.04)
  config.warmup_teacher_temperature_steps = 0  # linear warm-up length (paper: 30 epochs); 0: none
  config.center_momentum = 0.9               # EMA momentum of the centre (paper: 0.9)
  config.base_momentum = 0.996               # teacher EMA momentum at step 0, cosine to 1 (paper: 0.996)
  config.final_momentum = 1.0            # τ at the last step, reached on a cosine from base (papers: 1)
  config.freeze_last_layer_steps = 0         # steps the last layer gets no gradient (paper: 1 epoch)
  return validate.strict_update(config, overrides, "dino")


class WeightNormalizedDense(nn.Module):
  """x @ (v / ||v||), columns normalised, no bias: torch's weight_norm with the gain fixed
  to 1 (official norm_last_layer=True), so the student cannot grow its logits' scale."""
  features: int

  @nn.compact
  def __call__(self, x, freeze=False):
    # torch.nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as in the
    # official head (its trunc_normal init runs before the last layer is made).
    v = self.param("v", nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                   (x.shape[-1], self.features), jnp.float32)
    v = jnp.where(freeze, jax.lax.stop_gradient(v), v)
    weight = v * jax.lax.rsqrt(jnp.sum(jnp.square(v), axis=0, keepdims=True))
    return x @ weight.astype(x.dtype)


class DINOHead(nn.Module):
  """(Linear -> [BN] -> GELU) per hidden width, Linear to the bottleneck, l2-normalise,
  then the weight-normalised last layer to K logits (the official DINOHead)."""
  hidden_dims: Sequence[int]
  bottleneck_dim: int
  output_dim: int
  use_bn: bool = False
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool, freeze_last_layer=False):
    # trunc_normal(std=0.02) in the official code truncates at +-2 absolute, i.e. 100 std:
    # a plain normal.
    kernel_init = nn.initializers.normal(0.02)
    for i, dim in enumerate(self.hidden_dims):
      x = nn.Dense(dim, use_bias=not self.use_bn, kernel_init=kernel_init,
                   name=f"hidden{i + 1}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, name=f"hidden{i + 1}_bn")(x)
      x = nn.gelu(x, approximate=False)  # torch.nn.GELU is the exact erf form
    bottleneck = nn.Dense(self.bottleneck_dim, kernel_init=kernel_init, name="bottleneck")(x)
    logits = WeightNormalizedDense(self.output_dim, name="last_layer")(
        losses.l2_normalize(bottleneck), freeze=freeze_last_layer)
    return bottleneck, logits


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.dino or config.views."""
  _check_settings(config)
  multicrop.check_config(config, "DINO")


def _check_settings(config) -> None:
  dino = config.dino
  for name in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"):
    validate.number(f"dino.{name}", dino[name], low=0, low_open=True)
  for name in ("center_momentum", "base_momentum", "final_momentum"):
    validate.number(f"dino.{name}", dino[name], low=0, high=1)
  for name in ("warmup_teacher_temperature_steps", "freeze_last_layer_steps"):
    validate.number(f"dino.{name}", dino[name], low=0, integer=True)
  for name in ("bottleneck_dim", "output_dim"):
    validate.number(f"dino.{name}", dino[name], low=1, integer=True)


def network(config: ml_collections.ConfigDict, for_teacher: bool = False
            ) -> multicrop.MultiCropNetwork:
  """The student's network; `for_teacher`: the same without stochastic depth."""
  _check_settings(config)
  dino = config.dino
  multicrop.crop_counts(config, "DINO")
  return multicrop.MultiCropNetwork(
      backbone=models.build(teacher.teacher_model_config(config.model) if for_teacher
                            else config.model),
      head=DINOHead(tuple(dino.head_hidden_dims), dino.bottleneck_dim, dino.output_dim,
                    use_bn=dino.use_bn_in_head))


def init(rng: jax.Array, config: ml_collections.ConfigDict, example_batch: dict) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, [images], train=False)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  # The teacher starts as an exact copy of the student.
  state = {"batch_stats": batch_stats,
           "teacher": {"params": params, "batch_stats": batch_stats},
           "center": jnp.zeros((1, config.dino.output_dim), jnp.float32)}
  return params, state


def views(batch: dict, rng: jax.Array, step, config: ml_collections.ConfigDict):
  """(global crops [G*B, S, S, C], local crops [N*B, s, s, C] or None), view-major."""
  del step  # the same augmentation all run long
  return multicrop.make(batch["image"], rng, config, "DINO")


def teacher_temperature(step, config) -> jax.Array:
  """The teacher temperature of step `step`: linear warm-up, then constant."""
  dino = config.dino
  return teacher.teacher_temperature(step, dino.warmup_teacher_temperature_steps,
                                     dino.warmup_teacher_temperature, dino.teacher_temperature)


# The student applies the backbone's stochastic depth (a ViT's drop_path_rate) with the
# step's rng; the teacher has none.
DROP_PATH = True


def loss(params, method_state, views, rng, step, config, train: bool = True):
  global_crops, local_crops = views
  num_global, _ = multicrop.crop_counts(config, "DINO")
  net, dino = network(config), config.dino
  crop_groups = [global_crops] + ([] if local_crops is None else [local_crops])
  num_crops = multicrop.crops_per_image(global_crops, local_crops, num_global)
  freeze = jnp.asarray(step) < dino.freeze_last_layer_steps
  (_, (bottleneck, student_logits)), student_updates = net.apply(
      {"params": params, "batch_stats": method_state["batch_stats"]}, crop_groups, train=train,
      freeze_last_layer=freeze, mutable=["batch_stats"],
      rngs=None if rng is None else {"dropout": rng})
  teacher_vars = method_state["teacher"]
  (_, (_, teacher_logits)), teacher_updates = network(config, for_teacher=True).apply(
      teacher_vars, [global_crops], train=train, mutable=["batch_stats"])
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  temperature = teacher_temperature(step, config)
  center = method_state["center"]
  value, teacher_probs = losses.dino_loss(
      jnp.split(student_logits, num_crops),  # globals first, then locals: [B, K] each
      teacher_logits.reshape(num_global, -1, teacher_logits.shape[-1]), center,
      dino.student_temperature, temperature, num_global)
  new_center = losses.dino_center_update(center, teacher_logits, dino.center_momentum)
  new_state = {
      "batch_stats": student_updates.get("batch_stats", method_state["batch_stats"]),
      "teacher": {"params": teacher_vars["params"],
                  "batch_stats": teacher_updates.get("batch_stats", teacher_vars["batch_stats"])},
      "center": new_center}
  global_bottleneck = bottleneck[:global_crops.shape[0]]
  metrics = {"teacher_entropy": diagnostics.entropy(teacher_probs),
             "log_k": jnp.log(jnp.float32(dino.output_dim)),  # teacher_entropy of a uniform teacher
             "collapsed_loss": jnp.log(jnp.float32(dino.output_dim)),  # uniform teacher and student
             "teacher_temperature": temperature,
             "embedding_std": diagnostics.embedding_std(global_bottleneck),
             "effective_rank": diagnostics.effective_rank(global_bottleneck),
             "center_norm": jnp.linalg.norm(new_center)}
  return value, (metrics, new_state)


def momentum(step, config) -> jax.Array:
  """τ after optimizer step `step`: base_momentum at 0, cosine up to 1 at total_steps."""
  return teacher.cosine_momentum(step, config.total_steps, config.dino.base_momentum,
                                 config.dino.final_momentum)


def update(params, method_state, step, config):
  return teacher.follow(method_state, "teacher", params, momentum(step, config))


def backbone(params, method_state, config) -> dict:
  """The EMA teacher's backbone: what the official code evaluates and exports (its primary
  features; encode also gives the student's)."""
  del params, config
  return teacher.ema_backbone(method_state, "teacher")


def encode(params, method_state, batch, config) -> dict:
  """Backbone features of the teacher (primary) and the student (multicrop.encode)."""
  return multicrop.encode(params, method_state, batch, config)

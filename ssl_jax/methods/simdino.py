"""SimDINO: "Simplifying DINO via Coding Rate Regularization", Wu, Zhang, Pai, Wang, Singh,
Yang, Gao, Ma, ICML 2025 (arXiv:2502.10385), and the official code
(github.com/RobinWu218/SimDINO, simdino/main_dino.py).

DINO's EMA teacher and multi-crop (view groups `global_crops`, `local_crops`; the teacher
sees only the global crops, ssl_jax/methods/lib/multicrop.py), with DINO's prototype layer, softmax,
centring and temperature schedules removed. The head (MLP, GELU, a bottleneck) ends in
l2-normalised features z, and the loss is

    L = mean over (teacher global i, student view j != i) and the batch of 1/2 ||z_s^j - z_t^i||^2
        - gamma * mean over global views i of R_eps(Z_s^i),
    R_eps(Z) = 1/2 logdet(I + d / (n eps^2) Z^T Z)        (n features of dimension d)

(losses.simdino_alignment, losses.coding_rate): the coding rate of the student's global
features over the GLOBAL batch is what prevents collapse. For unit vectors 1/2 ||a - b||^2
= 1 - cos(a, b), so the first term is the official code's negative cosine plus 1.

gamma: with `coding_rate_balance` (the default) gamma = coding_rate_weight * (d + n) / (d n),
the official code's balancing factor for n images per view and d dimensions (it calls it
a heuristic); without it gamma = coding_rate_weight. eps: the official training command
passes eps = 0.05, which its code uses in place of eps^2, so the default here is
eps = sqrt(0.05). Whose features the rate measures is `coding_rate_input`:
"student_teacher_mean", the official code's default (its `expa_type=1`) and the default
here: the rate of (z_s^i + z_t^i) / 2 for each global view i, the teacher's half carrying
no gradient, so the rate's pull on the student is half as strong and anchored to the
teacher; or "student", the paper's formula (the rate of the student's features alone). (The official code also takes the covariance per GPU, over the
local batch; here it is always over the global batch, so a run computes the same loss on
any number of devices.)

A collapsed student (one z for every image) has alignment 0 and R = 1/2 log(1 + d / eps^2):
`collapsed_loss` = -gamma R. Logged: `alignment`, `coding_rate` (per global view),
`coding_rate_weight` (gamma), and the usual embedding_std / effective_rank.

params: {"backbone", "head"} of the student.
method_state: {"batch_stats": student BN statistics, "teacher": {"params", "batch_stats"}}.
The teacher runs in train mode and moves by EMA only, as in DINO (see methods/dino.py).
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax import models
from ssl_jax.core import errors, validate
from ssl_jax.data import augment
from ssl_jax.methods.lib import diagnostics, losses, multicrop, teacher


RATE_INPUTS = ("student", "student_teacher_mean")


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.head_hidden_dims = (2048, 2048)  # hidden widths of the head MLP (official: 2048, 2048)
  config.bottleneck_dim = 256             # d, the normalised feature width (official: 256)
  config.use_bn_in_head = False           # BN in the head MLP (official: False, ViT)
  config.coding_rate_weight = 1.0         # gamma, or its multiplier with coding_rate_balance
  config.coding_rate_balance = True       # gamma *= (d + n) / (d n), the official code's factor
  config.epsilon = 0.05 ** 0.5            # eps of R_eps (official command: eps^2 = 0.05)
  config.coding_rate_input = "student_teacher_mean"  # official expa_type=1; "student": the paper's
  config.base_momentum = 0.996            # teacher EMA at step 0, cosine to 1 (official: 0.996)
  config.final_momentum = 1.0            # τ at the last step, reached on a cosine from base (papers: 1)
  return validate.strict_update(config, overrides, "simdino")


class SimDINOHead(nn.Module):
  """(Linear -> [BN] -> GELU) per hidden width, then Linear to the bottleneck: DINO's head
  without its weight-normalised prototype layer. The loss l2-normalises the output."""
  hidden_dims: Sequence[int]
  bottleneck_dim: int
  use_bn: bool = False
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool):
    kernel_init = nn.initializers.normal(0.02)  # trunc_normal(std=0.02), as in DINO's head
    for i, dim in enumerate(self.hidden_dims):
      x = nn.Dense(dim, use_bias=not self.use_bn, kernel_init=kernel_init,
                   name=f"hidden{i + 1}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, name=f"hidden{i + 1}_bn")(x)
      x = nn.gelu(x, approximate=False)
    return nn.Dense(self.bottleneck_dim, kernel_init=kernel_init, name="bottleneck")(x)


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.simdino or config.views."""
  _check_settings(config)
  multicrop.check_config(config, "SimDINO")


def _check_settings(config) -> None:
  settings = config.simdino
  validate.number("simdino.coding_rate_weight", settings.coding_rate_weight, low=0)
  validate.number("simdino.epsilon", settings.epsilon, low=0, low_open=True)
  validate.number("simdino.base_momentum", settings.base_momentum, low=0, high=1)
  validate.number("simdino.final_momentum", config.simdino.final_momentum, low=0, high=1)
  validate.number("simdino.bottleneck_dim", settings.bottleneck_dim, low=1, integer=True)
  if settings.coding_rate_input not in RATE_INPUTS:
    raise errors.ConfigError(f"simdino.coding_rate_input={settings.coding_rate_input!r}; "
                             f"expected one of {RATE_INPUTS}")


def network(config: ml_collections.ConfigDict, for_teacher: bool = False
            ) -> multicrop.MultiCropNetwork:
  """The student's network; `for_teacher`: the same without stochastic depth."""
  _check_settings(config)
  settings = config.simdino
  multicrop.crop_counts(config, "SimDINO")
  return multicrop.MultiCropNetwork(
      backbone=models.build(teacher.teacher_model_config(config.model) if for_teacher
                            else config.model),
      head=SimDINOHead(tuple(settings.head_hidden_dims), settings.bottleneck_dim,
                       use_bn=settings.use_bn_in_head))


def init(rng: jax.Array, config: ml_collections.ConfigDict, example_batch: dict) -> tuple[Any, Any]:
  images = augment.evaluation_images(example_batch["image"][:1], config)
  variables = network(config).init(rng, [images], train=False)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  # The teacher starts as an exact copy of the student.
  return params, {"batch_stats": batch_stats,
                  "teacher": {"params": params, "batch_stats": batch_stats}}


def views(batch: dict, rng: jax.Array, step, config: ml_collections.ConfigDict):
  """(global crops [G*B, S, S, C], local crops [N*B, s, s, C] or None), view-major."""
  del step  # the same augmentation all run long
  return multicrop.make(batch["image"], rng, config, "SimDINO")


def coding_rate_weight(num_images: int, config) -> float:
  """gamma for n = num_images per view and d = bottleneck_dim (a Python float)."""
  settings, d = config.simdino, config.simdino.bottleneck_dim
  balance = (d + num_images) / (d * num_images) if settings.coding_rate_balance else 1.0
  return settings.coding_rate_weight * balance


# The student applies the backbone's stochastic depth (a ViT's drop_path_rate) with the
# step's rng; the teacher has none.
DROP_PATH = True


def loss(params, method_state, views, rng, step, config, train: bool = True):
  del step  # no schedule but the EMA's
  global_crops, local_crops = views
  num_global, _ = multicrop.crop_counts(config, "SimDINO")
  net, settings = network(config), config.simdino
  crop_groups = [global_crops] + ([] if local_crops is None else [local_crops])
  (_, student), student_updates = net.apply(
      {"params": params, "batch_stats": method_state["batch_stats"]}, crop_groups, train=train,
      mutable=["batch_stats"], rngs=None if rng is None else {"dropout": rng})
  teacher_vars = method_state["teacher"]
  (_, teacher_out), teacher_updates = network(config, for_teacher=True).apply(
      teacher_vars, [global_crops], train=train, mutable=["batch_stats"])
  num_images = global_crops.shape[0] // num_global
  student_views = jnp.split(student, multicrop.crops_per_image(global_crops, local_crops,
                                                              num_global))
  teacher_views = jax.lax.stop_gradient(teacher_out).reshape(num_global, num_images, -1)
  alignment = losses.simdino_alignment(student_views, teacher_views)
  rated = [losses.l2_normalize(view.astype(jnp.float32)) for view in student_views[:num_global]]
  if settings.coding_rate_input == "student_teacher_mean":
    rated = [(z + losses.l2_normalize(teacher_views[i].astype(jnp.float32))) / 2
             for i, z in enumerate(rated)]
  rates = [losses.coding_rate(z, settings.epsilon) for z in rated]
  rate = sum(rates) / num_global
  gamma = coding_rate_weight(num_images, config)
  d = settings.bottleneck_dim
  new_state = {
      "batch_stats": student_updates.get("batch_stats", method_state["batch_stats"]),
      "teacher": {"params": teacher_vars["params"],
                  "batch_stats": teacher_updates.get("batch_stats", teacher_vars["batch_stats"])}}
  global_student = student[:global_crops.shape[0]]
  metrics = {"alignment": alignment, "coding_rate": rate,
             "coding_rate_weight": jnp.float32(gamma),
             "collapsed_loss": jnp.float32(-gamma * 0.5 * math.log1p(d / settings.epsilon ** 2)),
             "embedding_std": diagnostics.embedding_std(global_student),
             "effective_rank": diagnostics.effective_rank(global_student)}
  return alignment - gamma * rate, (metrics, new_state)


def momentum(step, config) -> jax.Array:
  """τ after optimizer step `step`: base_momentum at 0, cosine up to 1 at total_steps."""
  return teacher.cosine_momentum(step, config.total_steps, config.simdino.base_momentum,
                                 config.simdino.final_momentum)


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

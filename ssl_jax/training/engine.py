"""The library half of training: the train state, the jitted train step, and building
both from a config. `train.py` (the loop), `evaluate.py` and `bench.py` all use these.

The step is a pure function of (state, batch) and knows nothing about any method or
modality: it calls the method's functions in the order of the contract
(ssl_jax/methods/__init__.py), takes one optimizer step, and lets the method update its
own state (EMA targets, queues, centres).
"""
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import methods
from ssl_jax.core import parallel, sharding
from ssl_jax.core.errors import ConfigError
from ssl_jax.core.validate import number
from ssl_jax.data import pipeline, sequences
from ssl_jax.models import conv
from ssl_jax.training import optim


@flax.struct.dataclass
class TrainState:
  step: jax.Array      # optimizer steps taken
  params: Any          # trained by the optimizer
  opt_state: Any
  method_state: Any    # the method's own pytree (batch_stats, EMA target, queue, centre)
  rng: jax.Array       # base key; step s uses fold_in(rng, s)


def all_finite(tree) -> jax.Array:
  """True when every floating-point value in `tree` is finite (one fused reduction)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _method_init(method, rng, config, batch):
  """method.init with threefry's non-partitionable lowering. Init is replicated, so the
  partitionable form buys nothing here, and on CPU it makes XLA compile each parameter's
  random initializer slowly: a ResNet-10's jitted init took 9.6 s to compile, 2.2 s this
  way. The values are deterministic and the same on any mesh either way (they differ
  between the two settings, so a run's init depends on this choice, not on the mesh)."""
  with jax.threefry_partitionable(False):
    return method.init(rng, config, batch)


def create_train_state(rng, *, method, config, tx, batch) -> TrainState:
  init_rng, train_rng = jax.random.split(rng)
  params, method_state = _method_init(method, init_rng, config, batch)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    method_state=method_state, rng=train_rng)


def loss_and_grads(method, params, method_state, views, rng, step, config,
                   micro_batches: int = 1):
  """((loss, (metrics, method_state)), grads) of method.loss at `views`.

  With `micro_batches` k > 1 (gradient accumulation, for a method that declares
  PER_EXAMPLE_LOSS), the views are split into k micro-batches (micro-batch j holds the
  examples j, j+k, j+2k, ..., so every device keeps its share of each) and the loss,
  metrics and gradients are their means weighted by `method.loss_weight(views, config)`
  (the number of loss terms; equal weights without it): the full batch's loss and
  gradients, up to float rounding, computed in 1/k of the activation memory. Metrics that
  are means over the loss terms (accuracies) come out exact too; batch statistics (a
  std, a perplexity) are the weighted mean of the micro-batches' values. Micro-batch j draws its
  loss randomness (dropout) from fold_in(rng, j), so only a deterministic loss is
  bitwise the full batch's. The method_state of the last micro-batch is returned.
  """
  grad_fn = jax.value_and_grad(method.loss, has_aux=True)
  if micro_batches == 1:
    return grad_fn(params, method_state, views, rng, step, config)
  k = micro_batches
  split = lambda v: jnp.swapaxes(v.reshape(v.shape[0] // k, k, *v.shape[1:]), 0, 1)
  micro = jax.tree.map(split, views)
  weight_fn = getattr(method, "loss_weight", None)

  def weighted_terms(views_j, index, state):
    (loss, (metrics, new_state)), grads = grad_fn(params, state, views_j,
                                                  jax.random.fold_in(rng, index), step, config)
    weight = jnp.asarray(weight_fn(views_j, config) if weight_fn else 1.0, jnp.float32)
    return (*jax.tree.map(lambda x: weight * x, (loss, metrics, grads)), weight), new_state

  def accumulate(carry, inputs):
    totals, state = carry
    terms, new_state = weighted_terms(inputs[1], inputs[0], state)
    return (jax.tree.map(jnp.add, totals, terms), new_state), None

  shapes, _ = jax.eval_shape(weighted_terms, jax.tree.map(lambda v: v[0], micro), 0, method_state)
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
  (totals, method_state), _ = jax.lax.scan(accumulate, (zeros, method_state),
                                           (jnp.arange(k), micro))
  loss, metrics, grads, weight = totals
  mean = lambda x: x / weight
  return (mean(loss), (jax.tree.map(mean, metrics), method_state)), jax.tree.map(mean, grads)


def check_accumulation(method, config, devices: int) -> None:
  """Raises ConfigError unless config.grad_accumulation fits the method and the batch."""
  k = config.grad_accumulation
  number("grad_accumulation", k, low=1, integer=True)
  if k == 1:
    return
  if not getattr(method, "PER_EXAMPLE_LOSS", False):
    exact = [m for m in methods.available() if getattr(methods.get(m), "PER_EXAMPLE_LOSS", False)]
    raise ConfigError(
        f"grad_accumulation={k}: {config.method} couples the examples of a batch (BatchNorm "
        "statistics, negatives or targets from the whole batch), so micro-batches would "
        "change what it computes, and it is refused rather than approximated. Methods "
        f"that accumulate exactly: {', '.join(exact)}. Use more devices, or a smaller batch.")
  if config.global_batch_size % (k * devices):
    raise ConfigError(
        f"grad_accumulation={k}: global_batch_size={config.global_batch_size} must be a "
        f"multiple of grad_accumulation x devices = {k * devices}, so that every device holds "
        "an equal share of every micro-batch")


def train_step(state: TrainState, batch: dict, *, method, config, tx, schedule):
  """One optimizer step; a pure function of (state, batch).

  views, loss and update all receive the same `step`: the number of optimizer steps
  taken before this one (0 for the first). metrics["finite"] says whether the loss, the
  gradient norm and every value of the new state are finite; the loop keeps the first
  step where it was not, with no host sync.
  """
  step = state.step
  view_rng, loss_rng = jax.random.split(jax.random.fold_in(state.rng, step))
  views = method.views(batch, view_rng, step, config)
  (loss, (metrics, method_state)), grads = loss_and_grads(
      method, state.params, state.method_state, views, loss_rng, step, config,
      config.grad_accumulation)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  method_state, update_metrics = method.update(params, method_state, step, config)
  metrics = {"loss": loss, **metrics, **update_metrics, "grad_norm": optax.tree.norm(grads),
             "learning_rate": schedule(step)}
  state = state.replace(step=step + 1, params=params, opt_state=opt_state,
                        method_state=method_state)
  metrics["finite"] = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"]) & all_finite(
      (state.params, state.opt_state, state.method_state))
  return state, metrics


def example_batch(config: ml_collections.ConfigDict) -> dict:
  """One real record of the training split, as a batch of one: the init example.

  Read through the same keys and host preprocessing as training, so the method sees
  exactly the shapes and dtypes it will train on, whatever the modality."""
  # Of the split's first records only: packing a whole corpus for one example would not do.
  source, keys, host_preprocess = sequences.training_source(
      config.data, config.data.train_split, config.seed, first=2, log=lambda *a, **k: None)
  return pipeline.read_batch(source, [0], keys, host_preprocess)


PRECISIONS = ("float32", "bfloat16")


def check_precision(config: ml_collections.ConfigDict) -> None:
  precision = config.get("precision", "float32")
  if precision not in PRECISIONS:
    raise ConfigError(f"precision={precision!r}; expected one of {', '.join(PRECISIONS)}")


def with_precision(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config the train step computes with. config.precision = "bfloat16" makes every
  network of the run (config.model, and config.text_model if there is one) compute its
  convolutions and matmuls in bfloat16; parameters and optimizer state stay float32
  (param_dtype), and normalisation statistics, softmax, the features a network returns
  and so the losses, EMA targets, queues and centres stay float32 (the models cast).
  Projection heads (models/heads.py) compute in float32. Evaluation runs in float32."""
  check_precision(config)
  precision = config.get("precision", "float32")
  if precision == "float32":
    return config
  config = ml_collections.ConfigDict(config.to_dict())  # a copy; the run's config is unchanged
  for name in ("model", "text_model"):
    if name in config:
      config[name].dtype = precision
  config.lock()
  return config


def build(config: ml_collections.ConfigDict, mesh, example: dict | None = None):
  """(method, jitted init(rng) -> state, jitted step(state, batch)) for a config and mesh.

  `example` is a one-example batch giving input shapes; default: the dataset's first record.
  The step computes at config.precision (with_precision). Each state leaf is laid out by
  config.sharding on the mesh's 'fsdp' axis (ssl_jax/core/sharding.py): init makes the state
  in that layout and the step keeps it there.
  """
  config = with_precision(config)
  method = methods.get(config.method)
  parallel.check_global_batch_size(config.global_batch_size, mesh)
  check_accumulation(method, config, mesh.devices.size)
  layout = config.get("sharding", sharding.default_config())
  fsdp = parallel.fsdp_size(layout.fsdp, mesh.devices.size)
  if fsdp != mesh.shape.get(parallel.FSDP_AXIS, 1):
    raise ConfigError(f"sharding.fsdp={layout.fsdp} but the mesh's fsdp axis has "
                      f"{mesh.shape.get(parallel.FSDP_AXIS, 1)} devices: build the mesh with "
                      f"parallel.make_mesh({fsdp})")
  labels = method.param_labels if hasattr(method, "param_labels") else None
  tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps,
                                      config.global_batch_size,
                                      param_labels=partial(labels, config=config) if labels else None)
  make_state = partial(create_train_state, method=method, config=config, tx=tx,
                       batch=example if example is not None else example_batch(config))
  if fsdp == 1:  # every leaf replicated: no need to trace the state's shapes for a layout
    sharding.check_rules(layout)
    shardings = parallel.replicated(mesh)
  else:
    shardings = sharding.state_shardings(jax.eval_shape(make_state, jax.random.PRNGKey(0)),
                                         mesh, layout)
  init = jax.jit(make_state, out_shardings=shardings)
  # The step runs under the mesh, so a method may use jax.shard_map where it truly needs
  # per-device semantics.
  step = jax.jit(partial(_step_under_mesh, mesh=mesh, method=method, config=config, tx=tx,
                         schedule=schedule),
                 out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=(0,))
  return method, init, step


def _step_under_mesh(state, batch, *, mesh, **kwargs):
  # The abstract mesh is what jax.shard_map(..., mesh=None) picks up inside jit; the mesh's
  # platform and size, not this host's, pick the models' "auto" strategies (a TPU program
  # may be compiled on a CPU host: ssl_jax/tools/aot.py).
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), \
       conv.target_backend(mesh.devices.flat[0].platform, mesh.devices.size):
    return train_step(state, batch, **kwargs)


def abstract_state(init, rng) -> TrainState:
  """Shapes, dtypes and shardings (build's layout) of the state `init(rng)` would make:
  the restore target, so a checkpoint loads onto this mesh and layout, whatever mesh and
  layout wrote it, without a throwaway init."""
  return jax.eval_shape(init, rng)


def model_init(method, config, example: dict):
  """rng -> (params, method_state) exactly as create_train_state makes them from the same
  rng, with no optimizer: what evaluation and fine-tuning build."""
  def init(rng):
    init_rng, _ = jax.random.split(rng)
    return _method_init(method, init_rng, config, example)
  return init


def abstract_model_fields(method, config, mesh, example: dict) -> dict:
  """{"step", "params", "method_state"}: the shapes of the train state's fields that an
  evaluation restores (Checkpointer.restore_fields), replicated on `mesh`."""
  params, method_state = jax.eval_shape(model_init(method, config, example),
                                        jax.random.PRNGKey(0))
  spec = lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.replicated(mesh))
  return {"step": spec(jax.ShapeDtypeStruct((), jnp.int32)),
          "params": jax.tree.map(spec, params), "method_state": jax.tree.map(spec, method_state)}

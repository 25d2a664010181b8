"""The library half of training: the train state, the jitted train step, and building
both from a config. `train.py` (the loop), `evaluate.py` and `bench.py` all use these.

The step is a pure function of (state, batch) and knows nothing about any method or
modality: it calls the method's functions in the order of the contract
(ssl_jax/methods/__init__.py), takes one optimizer step, and lets the method update its
own state (EMA targets, queues, centres).
"""
import json
import os
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssl_jax import methods, optim, parallel
from ssl_jax.data import pipeline, preprocess, sources


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
  grad_fn = jax.value_and_grad(method.loss, has_aux=True)
  (loss, (metrics, method_state)), grads = grad_fn(
      state.params, state.method_state, views, loss_rng, step, config)
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
  data = config.data
  source = sources.get_source(data.name, data.train_split, data.data_dir)
  return pipeline.read_batch(source, [0], tuple(data.features), preprocess.from_config(data))


def build(config: ml_collections.ConfigDict, mesh, example: dict | None = None):
  """(method, jitted init(rng) -> state, jitted step(state, batch)) for a config and mesh.

  `example` is a one-example batch giving input shapes; default: the dataset's first record.
  """
  method = methods.get(config.method)
  parallel.check_global_batch_size(config.global_batch_size, mesh)
  labels = method.param_labels if hasattr(method, "param_labels") else None
  tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps,
                                      config.global_batch_size,
                                      param_labels=partial(labels, config=config) if labels else None)
  replicated = parallel.replicated(mesh)
  init = jax.jit(partial(create_train_state, method=method, config=config, tx=tx,
                         batch=example if example is not None else example_batch(config)),
                 out_shardings=replicated)
  # The step runs under the mesh, so a method may use jax.shard_map where it truly needs
  # per-device semantics.
  step = jax.jit(partial(_step_under_mesh, mesh=mesh, method=method, config=config, tx=tx,
                         schedule=schedule),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))
  return method, init, step


def _step_under_mesh(state, batch, *, mesh, **kwargs):
  # The abstract mesh is what jax.shard_map(..., mesh=None) picks up inside jit.
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    return train_step(state, batch, **kwargs)


def abstract_state(init, rng, mesh) -> TrainState:
  """Shapes, dtypes and (replicated) shardings of the state `init(rng)` would make:
  the restore target, so a checkpoint loads onto this mesh without a throwaway init."""
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.replicated(mesh)),
      jax.eval_shape(init, rng))


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


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a training run?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))

"""Self-supervised objectives, one module per method: the method contract (v2).

The module path is the registry: `config.method = "simclr"` means
`ssl_jax.methods.simclr` (core/registry.py), and every module in this folder is a method;
what several methods share lives in methods/lib/ (losses, teacher, views, multicrop,
diagnostics, defaults). Any other name is imported as a module path (`config.method = "my_project.my_method"`): a method
that lives outside the package, e.g. in a fork's own folder or a test. A method is
pure functions of plain pytrees; the trainer calls them in this order and knows nothing
else about any method:

  default_config(**overrides) -> ConfigDict
      The method's own section (config.<name>); strict: an unknown field raises.
  init(rng, config, example_batch) -> (params, method_state)
      `example_batch` is one real record of the training data as a batch of one, with
      whatever keys the dataset has (config.data.features). `params` are what the
      optimizer trains; `method_state` is everything else the method keeps (batch_stats,
      EMA target params, a queue, a centre): the trainer checkpoints it and never looks
      inside.
  views(batch, rng, step, config) -> views
      On-device augmentation or masking of the whole (global) batch, any pytree.
  loss(params, method_state, views, rng, step, config, train=True)
      -> (loss, (metrics, method_state))
      Differentiated with respect to `params`. `metrics` is a dict of scalars, logged
      every config.log_every_steps with no extra host sync.
  update(params, method_state, step, config) -> (method_state, metrics)
      Runs after the optimizer: `params` are the new ones; EMA targets, queues and
      centres move here.
  encode(params, method_state, batch, config) -> features | {name: features}
      Frozen features [B, D] of an evaluation batch (no randomness, train=False); a dict
      names several feature sets (e.g. "backbone", "projection"), the first is primary.

`step` is the same int32 scalar in views, loss and update: the number of optimizer
steps taken before this one (0 for the first step). The step is jitted over the device
mesh with the batch sharded over all devices and the state replicated or split over
'fsdp' (ssl_jax/core/sharding.py; a method never sees the difference), so global-batch
quantities need no collectives; it runs under `jax.sharding.use_abstract_mesh`, so a
method may use `jax.shard_map` (its mesh is picked up) where it truly needs per-device
semantics.

Expected of every method whose features come from `config.model` (all in this folder):
  backbone(params, method_state, config) -> variables
      The trained backbone as the flax variables of `models.build(config.model)`
      ({"params"}, plus {"batch_stats"} for a BatchNorm network): what `encode` evaluates
      (through `models.encode_images`), what `python -m ssl_jax.export` writes and what
      fine-tuning starts from. A method whose pretext changes the input itself
      (colorization: the lightness only) encodes that input instead, says so in its
      docstring and in PRETRAINING_INPUT (a string export records in the sidecar).

Expected of every method (the check pass, train.check, calls it before anything is built):
  check_config(config) -> None
      Raises core.errors.ConfigError for the first invalid value of its section or of
      the view groups it needs (one line naming the field and what would work). The
      functions above may call it too, so a library user who skips the check pass gets
      the same errors.

Optional:
  param_labels(params, config) -> pytree of "default" | "no_decay" | "constant_lr" | "frozen"
      Optimizer parameter groups (ssl_jax/training/optim.py): e.g. SimSiam's predictor at a fixed
      learning rate ("constant_lr"), tokens without weight decay.
  PER_EXAMPLE_LOSS = True (a module constant), and loss_weight(views, config) -> scalar
      Declares that every leaf of `views` has the examples on its leading axis and that
      `loss` is a mean over loss terms of single examples (no BatchNorm, negatives or
      batch-wide targets): then config.grad_accumulation = k splits the views into k
      micro-batches, exactly (engine.loss_and_grads). `loss_weight` is a micro-batch's
      number of loss terms (MLM's chosen tokens); without it the micro-batches weigh the
      same. Any other method refuses accumulation.
  DROP_PATH = True (a module constant)
      Declares that `loss` gives the backbone the step's random stream as
      rngs={"dropout": rng} in training, so a ViT's stochastic depth
      (model.drop_path_rate > 0) can run; the check pass refuses a drop-path rate for any
      other method (DINO, SimDINO, MAE and CLIP declare it; DINO's and SimDINO's teachers
      run without it, as the official teacher does).
  load_pretrained(params, method_state, pretrained_params, pretrained_state, config)
      -> (params, method_state)
      Puts a pretrained run's weights into a freshly initialised state, for a method that
      starts its own training from them. No method defines it yet; fine-tuning starts
      from `backbone` (or an exported file, `export.load`).
"""
from types import ModuleType

from ssl_jax.core.registry import Registry

REQUIRED = ("default_config", "init", "views", "loss", "update", "encode")
_REGISTRY = Registry(__name__, "config.method", outside=True)


def available() -> list[str]:
  return _REGISTRY.available()


def get(name: str) -> ModuleType:
  """The method module for `config.method`, with an error listing the valid names."""
  module = _REGISTRY.get(name)
  missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
  if missing:
    raise TypeError(f"method {name!r} ({module.__file__}) lacks {missing} of the method "
                    "contract (ssl_jax/methods/__init__.py)")
  return module

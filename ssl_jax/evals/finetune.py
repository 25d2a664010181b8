"""Fine-tuning: the pretrained backbone plus a linear head, trained end to end on labels,
next to the same architecture and recipe from random weights (supervised from scratch).

MAE's recipe, scaled to a config: AdamW (lr x batch/256), linear warm-up then cosine,
layer-wise learning-rate decay (layer l of L trains at lr * layer_decay**(L - l): the
embeddings or stem are layer 0, each block one layer, the head L; `ssl_jax.models.<family>`
numbers them; a Transformer's embeddings are layer 0), drop path for ViTs, label
smoothing, random resized crops and flips (text: the token ids as they are). Weight
decay spares biases, norm parameters and the class token.

Partial fine-tuning: `frozen_blocks = K` keeps the embeddings and the first K blocks
(ViT) or residual blocks (ResNet) fixed; their BatchNorm layers still normalise with
batch statistics (as a torchvision model whose frozen layers stay in train mode).
`frozen_blocks = -1` trains the head alone on the frozen backbone in inference mode.

Model selection never sees test: `holdout_fraction` of the train split (a fixed random
subset) is held out, the network is scored on it after every epoch, and the epoch with
the best held-out top-1 is the one scored once on test.

This evaluator reads weights, not frozen features (INPUT = "weights"): `evaluate_weights`
gets the backbones' variables and builds its own network, data and train step.
"""
import importlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ssl_jax import models
from ssl_jax.core import errors, parallel, validate
from ssl_jax.data import augment, pipeline, preprocess, sources
from ssl_jax.evals.lib import extraction

INPUT = "weights"
NO_DECAY = ("class_token", "mask_token")


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.epochs = 10                  # passes over the (non-held-out) train split
  config.batch_size = 256             # global batch
  config.learning_rate = 1e-3         # AdamW base lr, x batch_size/256 (MAE ViT-B: 5e-4)
  config.layer_decay = 0.75           # layer-wise lr decay; 1.0 disables (MAE ViT-B: 0.65)
  config.weight_decay = 0.05          # decoupled, off biases, norms and tokens
  config.b1 = 0.9                     # AdamW moments
  config.b2 = 0.999
  config.warmup_epochs = 1.0          # linear warm-up (may be a fraction), then cosine to 0
  config.label_smoothing = 0.1        # MAE: 0.1
  config.drop_path_rate = 0.1         # ViT stochastic depth while fine-tuning (ResNet: unused)
  config.frozen_blocks = 0            # K > 0: first K blocks fixed; -1: train the head alone
  config.crop_scale = (0.35, 1.0)     # random resized crop of the train images (+ flip)
  config.holdout_fraction = 0.1       # share of train held out to choose the epoch
  config.seed = 0                     # hold-out split, head, data order, augmentation
  return validate.strict_update(config, overrides, "eval.finetune")


def protocol(config: ml_collections.ConfigDict) -> dict:
  return {"training": "end to end: backbone + linear head, AdamW, warm-up + cosine, "
                      "layer-wise lr decay, label smoothing, random resized crop + flip",
          **{k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()},
          "selection": f"the epoch with the best top-1 on a held-out {config.holdout_fraction:g} "
                       "of train; test scored once"}


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.eval.finetune (the batch is also
  checked against the devices and the train split's size when they are known)."""
  validate.number("eval.finetune.epochs", config.epochs, low=1, integer=True)
  validate.number("eval.finetune.batch_size", config.batch_size, low=1, integer=True)
  validate.number("eval.finetune.learning_rate", config.learning_rate, low=0, low_open=True)
  validate.number("eval.finetune.layer_decay", config.layer_decay, low=0, low_open=True, high=1)
  validate.number("eval.finetune.weight_decay", config.weight_decay, low=0)
  validate.number("eval.finetune.warmup_epochs", config.warmup_epochs, low=0)
  validate.number("eval.finetune.label_smoothing", config.label_smoothing, low=0, high=1,
                  high_open=True)
  validate.number("eval.finetune.drop_path_rate", config.drop_path_rate, low=0, high=1,
                  high_open=True)
  validate.number("eval.finetune.frozen_blocks", config.frozen_blocks, low=-1, integer=True)
  validate.number("eval.finetune.holdout_fraction", config.holdout_fraction, low=0, high=1,
                  low_open=True, high_open=True)


class Classifier(nn.Module):
  """backbone -> Dense(num_classes), the head starting at zero (MAE starts it at ~0)."""
  backbone: nn.Module
  num_classes: int
  backbone_train: bool = True

  @nn.compact
  def __call__(self, images, train: bool):
    features = self.backbone(images, train=train and self.backbone_train)
    if not self.backbone_train:
      features = jax.lax.stop_gradient(features)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(features)


def lr_scales(params, model, config) -> dict:
  """Per-parameter lr multipliers: layer-wise decay, 0 where frozen."""
  family = importlib.import_module(type(model).__module__)
  total = family.num_layers(model)

  def scale(path, _):
    keys = tuple(str(getattr(k, "key", k)) for k in path)
    layer = total if keys[0] == "head" else family.layer_id(model, keys[1:])
    frozen = (config.frozen_blocks == -1 and keys[0] != "head") or (
        config.frozen_blocks > 0 and layer <= config.frozen_blocks)
    return 0.0 if frozen else float(config.layer_decay ** (total - layer))
  return jax.tree_util.tree_map_with_path(scale, params)


def optimizer(params, model, config, steps: int, warmup: int) -> optax.GradientTransformation:
  peak = config.learning_rate * config.batch_size / 256
  schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(steps, warmup + 1))
  decay = jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1 and str(getattr(path[-1], "key", "")) not in NO_DECAY, params)
  scales = lr_scales(params, model, config)
  # Scaling AdamW's whole update scales its lr and its weight decay together, as a
  # per-group lr does in MAE's code.
  scale_updates = optax.stateless(lambda updates, _: jax.tree.map(lambda u, s: u * s, updates, scales))
  return optax.chain(optax.adamw(schedule, b1=config.b1, b2=config.b2,
                                 weight_decay=config.weight_decay, mask=decay), scale_updates)


def evaluate_weights(backbones: dict, *, run_config, mesh, num_classes: int,
                     config: ml_collections.ConfigDict, log=print) -> dict:
  """{name: {"top1", "holdout_top1", "best_epoch", "holdout_by_epoch", "minutes"}} for each
  backbone's variables in `backbones` ("pretrained", "random_init"), one recipe: its
  programs are compiled once and shared by every backbone (they have one structure)."""
  check_config(config)
  recipe = None
  results = {}
  for name, variables in backbones.items():
    recipe = recipe or Recipe(variables, run_config=run_config, mesh=mesh,
                              num_classes=num_classes, config=config)
    results[name] = recipe.run(variables, log=lambda text, name=name: log(f"  finetune {name}: {text}"))
  return results


def finetune(variables: dict, *, run_config, mesh, num_classes: int, config, log=print) -> dict:
  """One backbone fine-tuned by the recipe (evaluate_weights shares one recipe)."""
  check_config(config)
  return Recipe(variables, run_config=run_config, mesh=mesh, num_classes=num_classes,
                config=config).run(variables, log=log)


class Recipe:
  """The fine-tuning recipe for one backbone structure: data splits, optimizer and the
  jitted train step and predict function, built once; `run` trains one backbone."""

  def __init__(self, variables: dict, *, run_config, mesh, num_classes: int, config):
    data = run_config.data
    if data.modality not in ("image", "text"):
      raise errors.ConfigError(f"eval finetune trains image or text classifiers; "
                               f"data.modality={data.modality!r} has no recipe here (a frame "
                               "encoder of video is scored by the linear and kNN probes)")
    parallel.check_global_batch_size(config.batch_size, mesh)
    model_config = ml_collections.ConfigDict(run_config.model.to_dict())
    if "drop_path_rate" in model_config:
      model_config.drop_path_rate = config.drop_path_rate
    backbone = models.build(model_config)
    classifier = Classifier(backbone, num_classes, backbone_train=config.frozen_blocks != -1)
    self.backbone, self.num_classes, self.config = backbone, num_classes, config
    self.run_config, self.mesh = run_config, mesh

    train_source = sources.get_source(data.name, run_config.eval.train_split, data.data_dir)
    order = np.random.default_rng(config.seed).permutation(len(train_source))
    held = max(1, int(len(order) * config.holdout_fraction))
    self.fit = pipeline.Subset(train_source, np.sort(order[held:]), "fit")
    self.holdout = pipeline.Subset(train_source, np.sort(order[:held]), "holdout")
    self.steps_per_epoch = len(self.fit) // config.batch_size
    if self.steps_per_epoch < 1:
      raise errors.ConfigError(f"eval.finetune.batch_size={config.batch_size} exceeds the "
                                 f"{len(self.fit)} fine-tuning images")
    self.tx = tx = optimizer(self.initial_params(variables), backbone, config,
                             config.epochs * self.steps_per_epoch,
                             round(config.warmup_epochs * self.steps_per_epoch))
    self.replicated = replicated = parallel.replicated(mesh)
    text = data.modality == "text"
    crops = None if text else augment.default_view_config(
        crop_size=data.image_size, crop_scale=tuple(config.crop_scale), jitter_prob=0.0,
        grayscale_prob=0.0)

    def train_inputs(batch, rng):
      """Token ids as they are (text); random resized crops and flips (images)."""
      if text:
        return batch["tokens"]
      return augment.normalize(augment.random_views(batch["image"], rng, crops), data.mean, data.std)

    def eval_inputs(batch):
      return batch["tokens"] if text else augment.evaluation_images(batch["image"], run_config)

    def apply(params, batch_stats, images, train, rng=None):
      model_vars = models.variables(params, batch_stats)
      out, updates = classifier.apply(model_vars, images, train=train, mutable=["batch_stats"],
                                      rngs={"dropout": rng} if rng is not None else None)
      return out, updates.get("batch_stats", batch_stats)

    @jax.jit
    def step(state, batch, rng):
      params, batch_stats, opt_state = state
      crop_rng, drop_rng = jax.random.split(rng)
      images = train_inputs(batch, crop_rng)
      targets = optax.smooth_labels(jax.nn.one_hot(batch[data.label_key], num_classes),
                                    config.label_smoothing)

      def loss_fn(params):
        logits, new_stats = apply(params, batch_stats, images, True, drop_rng)
        return optax.softmax_cross_entropy(logits, targets).mean(), new_stats
      (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return jax.lax.with_sharding_constraint(
          (optax.apply_updates(params, updates), new_stats, opt_state), replicated), loss

    self.step = step
    self.predict = jax.jit(lambda params, batch_stats, batch: apply(
        params, batch_stats, eval_inputs(batch), False)[0])

  def initial_params(self, variables: dict) -> dict:
    return {"backbone": variables["params"],
            "head": {"kernel": jnp.zeros((self.backbone.feature_dim, self.num_classes)),
                     "bias": jnp.zeros((self.num_classes,))}}

  def accuracy(self, params, batch_stats, source) -> float:
    data = self.run_config.data
    logits, labels = extraction.extract(
        lambda batch: self.predict(params, batch_stats, batch), source, self.mesh,
        self.run_config.eval.batch_size, keys=tuple(data.features), label_key=data.label_key,
        preprocess=preprocess.from_config(data))
    return float(np.mean(np.argmax(logits["features"], -1) == labels))

  def run(self, variables: dict, log=print) -> dict:
    start = time.time()
    config, data, run_config = self.config, self.run_config.data, self.run_config
    step, accuracy, replicated = self.step, self.accuracy, self.replicated
    steps_per_epoch, fit, holdout, mesh = self.steps_per_epoch, self.fit, self.holdout, self.mesh
    params = self.initial_params(variables)
    batch_stats = {"backbone": variables["batch_stats"]} if variables.get("batch_stats") else None
    state = jax.device_put((params, batch_stats, self.tx.init(params)), replicated)
    loader = iter(pipeline.train_loader(fit, global_batch_size=config.batch_size,
                                        seed=config.seed, keys=tuple(data.features),
                                        num_epochs=config.epochs,
                                        preprocess=preprocess.from_config(data)))
    base_rng = jax.random.PRNGKey(config.seed)
    holdout_by_epoch, best = [], None
    for epoch in range(config.epochs):
      losses = []
      for i in range(steps_per_epoch):
        global_step = epoch * steps_per_epoch + i
        state, loss = step(state, parallel.to_global(next(loader), mesh),
                           jax.random.fold_in(base_rng, global_step))
        losses.append(loss)
      held_top1 = accuracy(state[0], state[1], holdout)
      holdout_by_epoch.append(held_top1)
      if best is None or held_top1 > best[0]:
        best = (held_top1, epoch + 1, jax.device_get(state[:2]))
      log(f"epoch {epoch + 1}/{config.epochs} loss {float(np.mean(jax.device_get(losses))):.4f} "
          f"holdout top1 {held_top1:.4f} ({time.time() - start:.0f}s)")
    best_params, best_stats = jax.device_put(best[2], replicated)
    return {"top1": accuracy(best_params, best_stats, sources.get_source(
                data.name, run_config.eval.test_split, data.data_dir)),
            "holdout_top1": best[0], "best_epoch": best[1], "holdout_by_epoch": holdout_by_epoch,
            "minutes": (time.time() - start) / 60}

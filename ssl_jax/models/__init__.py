"""Flax (linen) networks. Backbone families, one per file: resnet.py, vit.py,
transformer.py; helpers: attention.py (the attention core's layout), conv.py (ResNet
convolutions), onednn.py (oneDNN's convolutions on CPU), heads.py (MLP heads and BackboneWithHead), remat.py (rematerialisation
policies), torch_names.py (a backbone's weights under torchvision's / timm's names).

`config.model.name = "resnet"` means `ssl_jax.models.resnet` (core/registry.py). A family
module is the whole contract of a backbone; adding one is adding a file that defines:

  default_config(...) -> ConfigDict
      Its config.model section, locked (a misspelt field is an error), with `name` set to
      the module's name. Experiments call it; configs may hold only its fields.
  check_config(model_config) -> None
      Raises core.errors.ConfigError naming the first field out of range. Runs in the one
      check pass before anything is built (training/checks.py).
  smoke(model_config) -> None
      Shrinks the section in place so the network compiles in seconds (experiments'
      --smoke and the tests).
  build(model_config) -> nn.Module
      The network, called as `module.apply(variables, inputs, train=...)` -> float32
      features [B, D]; the module has a `feature_dim` property (D).
  num_layers(module) -> int and layer_id(module, path) -> int
      Layers for layer-wise learning-rate decay in fine-tuning (evals/finetune.py): the
      embeddings or stem are 0, the blocks 1..n, anything on top num_layers(module).

and may define:

  CPU_DEVICE_PER_CORE = True
      On a CPU host, train it on one device per core, data parallel (training/
      cpu_devices.py): for networks whose operations are too small for XLA:CPU to keep
      several cores busy inside each. Without it a CPU host is one device.

Methods reach a backbone only through `build(config.model)` (and `encode_images`), so a
new family trains with every method whose input it accepts.
"""
from types import ModuleType

import jax

from ssl_jax.core.registry import Registry
from ssl_jax.data import augment

_REGISTRY = Registry(__name__, "config.model.name", helpers=("attention", "conv", "heads", "onednn", "remat", "torch_names"))


def families() -> list[str]:
  return _REGISTRY.available()


def family(name: str) -> ModuleType:
  """The family module for `config.model.name`; ConfigError for an unknown name."""
  return _REGISTRY.get(name)


def check_config(model_config) -> None:
  """The family's checks of config.model (ConfigError)."""
  family(model_config.name).check_config(model_config)


def device_per_core(config) -> bool:
  """Whether every backbone of a run's config (config.model, and config.text_model where
  there is one) asks for one CPU device per core (a family's CPU_DEVICE_PER_CORE)."""
  sections = [config[name] for name in ("model", "text_model") if name in config]
  return bool(sections) and all(getattr(family(section.name), "CPU_DEVICE_PER_CORE", False)
                                for section in sections)


def build(model_config):
  """The backbone for `config.model`: `ssl_jax.models.<name>.build(model_config)`."""
  return family(model_config.name).build(model_config)


def variables(params, batch_stats=None) -> dict:
  """A backbone's flax variables: its params, and its BatchNorm statistics if it has any."""
  return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def encode_images(backbone_variables: dict, images, config):
  """Frozen backbone features [B, D] of uint8 images [B, H, W, C], at the evaluation
  resolution and normalisation: what every image method's `encode` returns, and what
  fine-tuning and exported weights start from."""
  return build(config.model).apply(backbone_variables, augment.evaluation_images(images, config),
                                   train=False)


def encode_videos(backbone_variables: dict, videos, config):
  """Frozen features [B, D] of uint8 videos [B, T, H, W, C]: the frame encoder's features
  of every frame (`encode_images`), averaged over the T frames."""
  frames = encode_images(backbone_variables, videos.reshape(-1, *videos.shape[2:]), config)
  return frames.reshape(videos.shape[0], videos.shape[1], -1).mean(axis=1)


def encode(backbone_variables: dict, batch: dict, config):
  """Frozen backbone features [B, D] of a batch as the data's modality feeds the backbone:
  images through `encode_images`, videos through `encode_videos`, text as its token ids
  (batch["tokens"])."""
  if config.data.modality == "text":
    return build(config.model).apply(backbone_variables, batch["tokens"], train=False)
  if config.data.modality == "video":
    return encode_videos(backbone_variables, batch["video"], config)
  return encode_images(backbone_variables, batch["image"], config)


def random_variables(config, example: dict, seed: int) -> dict:
  """A backbone's variables at random initialisation from `seed` alone, the same whatever
  method trains it: the random-init baseline every row with this backbone shares.
  `example` is a batch of at least one record (engine.example_batch)."""
  network = build(config.model)
  if config.data.modality == "text":
    inputs = example["tokens"][:1]
  elif config.data.modality == "video":  # a frame encoder: one frame
    inputs = augment.evaluation_images(example["video"][:1, 0], config)
  else:
    inputs = augment.evaluation_images(example["image"][:1], config)
  return dict(network.init(jax.random.PRNGKey(seed), inputs, train=False))

"""The benchmark's named specs: `M_resnet18` for every method with a CIFAR-10 ResNet recipe
(the peer's backbone, input and optimizer, ../shared/peers/simclr_resnet18.py, with the
method's own objective), `mae_vit` (../shared/peers/mae_vit.py) and `bert_mlm`
(../shared/peers/bert_mlm.py). `python -m ssl_jax.tools.bench NAME` times one."""
import importlib

import ml_collections

from ssl_jax import evals, methods, train
from ssl_jax.core import errors
from ssl_jax.methods.lib import views
from ssl_jax.models import transformer
from ssl_jax.training import optim

CIFAR_SHAPE = (32, 32, 3)
TEXT_LENGTH = 128


def _recipe(method: str, dataset: str = "cifar10") -> ml_collections.ConfigDict | None:
  """experiments/METHOD.py's config for `dataset`, or None when it has no such recipe."""
  try:
    module = importlib.import_module(f"experiments.{method}")
    return module.get_config(dataset)
  except (ModuleNotFoundError, errors.ConfigError):
    return None


def resnet18_methods() -> list[str]:
  """The methods with a `*_resnet18` spec: every method whose experiment has a CIFAR-10
  recipe that trains a ResNet on view groups (discovered, so a new method's spec needs no
  edit here)."""
  found = []
  for method in methods.available():
    recipe = _recipe(method)
    if recipe is not None and recipe.model.get("name") == "resnet" and len(recipe.views):
      found.append(method)
  return found


def _resnet18_spec(method: str, batch: int) -> ml_collections.ConfigDict:
  """The peer's backbone, input and optimizer, with `method`'s objective: its section at
  the method's defaults (the papers' heads) and the view groups of its CIFAR-10 recipe
  (experiments/METHOD.py: 32x32 crops, and 16x16 local crops for multi-crop methods)."""
  config = train.default_config()
  config.method = method
  config.global_batch_size = batch
  config.total_steps = 1000
  config.data = ml_collections.ConfigDict(dict(
      name="synthetic", features=("image", "label"), label_key="label", modality="image",
      image_size=32, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)))
  config.model = ml_collections.ConfigDict(dict(name="resnet", depth=18, width_multiplier=1.0,
                                                small_image_stem=True, small_stem_stride=1))
  config.views = _recipe(method).views
  config[method] = methods.get(method).default_config()
  config.optimizer = optim.default_config(name="sgd", learning_rate=0.1, lr_scaling="none",
                                          weight_decay=5e-4, momentum=0.9)
  config.eval = evals.default_config()
  return config


def _mae_vit_spec(batch: int) -> ml_collections.ConfigDict:
  """../shared/peers/mae_vit.py: ViT-Ti/4 on 32x32x3 (dim 192, 12 blocks, 3 heads, MLP 4),
  decoder 128-d x 4 blocks x 4 heads, 75% masking, normalised-pixel loss, AdamW 1.5e-4
  (0.9, 0.95), wd 0.05 off biases, norms and tokens."""
  config = _resnet18_spec("mae", batch)
  config.model = ml_collections.ConfigDict(dict(
      name="vit", variant="Ti", patch_size=4, width=0, depth=0, num_heads=0, mlp_ratio=4.0,
      pool="token", drop_path_rate=0.0, dtype="float32"))
  config.views = ml_collections.ConfigDict()
  config.views.crops = views.group(count=1, crop_size=32, crop_scale=(0.2, 1.0), jitter_prob=0.0,
                                   grayscale_prob=0.0)
  config.mae = methods.get("mae").default_config(decoder_width=128, decoder_depth=4,
                                                 decoder_heads=4)
  config.optimizer = optim.default_config(name="adamw", learning_rate=1.5e-4, lr_scaling="none",
                                          b2=0.95, weight_decay=0.05)
  return config


def _bert_mlm_spec(batch: int) -> ml_collections.ConfigDict:
  """../shared/peers/bert_mlm.py: HF BertForMaskedLM's shape (vocab 8192, hidden 256, 4
  layers, 4 heads, FFN 1024, post-norm, dropout 0.1, tied decoder), 128-token sequences,
  15% masking (80/10/10), vocabulary logits at all 128 positions as the peer computes
  them, AdamW 1e-4 wd 0.01 off biases and norms."""
  config = train.default_config()
  config.method = "mlm"
  config.global_batch_size = batch
  config.total_steps = 1000
  config.data = ml_collections.ConfigDict(dict(
      name="synthetic", features=("tokens",), label_key="", modality="text", vocab_size=8192,
      max_length=TEXT_LENGTH))
  config.model = transformer.default_config("mini", config.data, causal=False)
  config.views = ml_collections.ConfigDict()
  # The peer (BertForMaskedLM) computes the vocabulary logits at all 128 positions; so does
  # the spec, so that the ratio compares the frameworks on the same work (the method's own
  # default predicts at ceil(0.15 x 128) = 20 slots a sequence, as BERT's code does).
  config.mlm = methods.get("mlm").default_config(max_predictions=TEXT_LENGTH)
  config.optimizer = optim.default_config(name="adamw", learning_rate=1e-4, lr_scaling="none",
                                          weight_decay=0.01)
  config.eval = evals.default_config()
  return config


BENCHES = {"mae_vit": (_mae_vit_spec, 128), "bert_mlm": (_bert_mlm_spec, 32)}


def bench_spec(name: str):
  """(config builder of batch, default batch) of a named spec: mae_vit, bert_mlm, or
  M_resnet18 for any method of resnet18_methods()."""
  if name in BENCHES:
    return BENCHES[name]
  method = name[:-len("_resnet18")] if name.endswith("_resnet18") else None
  if method and method in resnet18_methods():
    return (lambda batch: _resnet18_spec(method, batch)), 128
  raise SystemExit(f"no bench {name!r}; specs: {', '.join(spec_names())}, loader, or "
                   "--experiment M:DATASET")


def spec_names() -> list[str]:
  return [f"{m}_resnet18" for m in resnet18_methods()] + sorted(BENCHES)

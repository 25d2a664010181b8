"""Recipe pieces several experiments share: the results table's Fashion-MNIST budget, the
language experiments' budget on fortunes, BYOL's asymmetric view groups, and the
held-out tail of a corpus with one split. Dataset presets live in ssl_jax/data/presets/,
backbone sections in each model family (ssl_jax/models/)."""
import ml_collections

from ssl_jax.core.errors import ConfigError
from ssl_jax.data import presets
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet, transformer
from ssl_jax.training import optim

# Fashion-MNIST's grey images have no saturation, hue or colour to drop; the SimCLR demo's
# crops (scale >= 0.4 was worse at 200 steps) and jitter. Every results-table row uses it.
FASHION_MNIST_VIEWS = dict(crop_size=24, crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
                           saturation=0.0, hue=0.0, grayscale_prob=0.0, jitter_prob=0.8)


def fashion_mnist_budget(config: ml_collections.ConfigDict, total_steps: int) -> None:
  """The results table's shared budget, in place: ResNet-18 at width 0.25 (16-32-64-128
  channels, small-image stem), batch 256, `total_steps` steps (each method's share of the
  SimCLR demo's minutes), logs every 25 steps, a checkpoint and a kNN monitor at half."""
  config.global_batch_size = 256
  config.total_steps = total_steps
  config.log_every_steps = 25
  config.checkpoint_every_steps = total_steps // 2
  config.eval.monitor_every_steps = total_steps // 2
  config.model = resnet.default_config(18, width_multiplier=0.25)


def fortunes_budget(config: ml_collections.ConfigDict, total_steps: int, causal: bool) -> None:
  """The language experiments' shared CPU budget on fortunes, in place: 64-token texts
  (83% fit whole, 93% would fit 128), the "mini" Transformer (the bert_mlm peer's size),
  batch 32, AdamW lr 5e-4 (b2 0.98, wd 0.01) with 100 warm-up steps, a checkpoint at half,
  no in-loop monitor (a kNN pass over text features costs minutes here); evaluated by the
  probes on the 43 categories and the held-out objective."""
  config.data = presets.data_config("fortunes", max_length=64)
  config.model = transformer.default_config("mini", config.data, causal=causal)
  config.global_batch_size = 32
  config.total_steps = total_steps
  config.log_every_steps = 25
  config.checkpoint_every_steps = total_steps // 2
  config.eval.monitor_every_steps = 0
  config.eval.modes = "linear,knn,objective"
  # fortunes is stored category by category: a monitor's kNN bank would be the whole split.
  config.eval.monitor_train_split, config.eval.monitor_test_split = "train", "test"
  config.optimizer = optim.default_config(name="adamw", learning_rate=5e-4, lr_scaling="none",
                                          b2=0.98, weight_decay=0.01, warmup_steps=100)


def held_out_tail(config: ml_collections.ConfigDict) -> None:
  """For a corpus with one split (wikipedia), in place: train on the first 99%, measure
  the objective on the last 1% (no labels, so no probes), no in-loop monitor."""
  config.data.train_split = "train[:99%]"
  config.eval.test_split = "train[99%:]"
  config.eval.modes = "objective"
  config.eval.monitor_every_steps = 0


def validation_split(config: ml_collections.ConfigDict, fraction: float = 0.1) -> None:
  """For choosing a recipe without the test split, in place: pretrain, fit the probes and
  the kNN bank on the first (1 - fraction) of train, score on its last `fraction` (the
  monitor too), so nothing the choice reads comes from test. Fashion-MNIST's train split
  is in random class order, so its tail is a fair sample; the test split then scores the
  chosen recipe once, with the experiment's default splits."""
  dataset = presets.for_data_name(config.data.name)
  if dataset is None:
    raise ConfigError(f"--validation: data.name={config.data.name!r} has no dataset preset "
                      "that declares its train size")
  total = presets.train_examples(dataset)
  cut = total - int(round(total * fraction))
  config.data.train_split = config.eval.train_split = f"train[:{cut}]"
  config.eval.test_split = f"train[{cut}:]"
  config.eval.monitor_train_split = f"train[:{min(10_000, cut)}]"
  config.eval.monitor_test_split = f"train[{cut}:{min(total, cut + 2000)}]"


def asymmetric_views(config: ml_collections.ConfigDict, blur: bool, **augment) -> None:
  """BYOL's two view groups, in place: `first` (blur 1.0, no solarisation) and `second`
  (blur 0.1, solarisation 0.2), otherwise alike; `blur=False` drops the blur (small
  images). BYOL, MoCo v3, Barlow Twins and VICReg train on them."""
  config.views.first = views.group(count=1, blur_prob=1.0 if blur else 0.0, solarize_prob=0.0,
                                   **augment)
  config.views.second = views.group(count=1, blur_prob=0.1 if blur else 0.0, solarize_prob=0.2,
                                    **augment)

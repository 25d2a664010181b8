"""Jigsaw puzzles (Noroozi & Favaro 2016, arXiv:1603.09246) on any dataset preset.

    python -m experiments.jigsaw --workdir /tmp/jigsaw_fashion_mnist
    python -m experiments.jigsaw --dataset imagenet2012 --workdir gs://BUCKET/jigsaw_in1k

fashion_mnist: the results table's budget (ResNet-18 width 0.25, batch 256, LARS lr 2.0
with 50 warm-up steps): a 27-pixel crop (scale 0.5-1, flips) cut into 3x3 cells of 9
pixels, 8-pixel tiles (gap 1), 100 permutations. 910 steps: SimCLR's 650-step minutes at
this step's measured cost (docs/results.md). Against the paper (below): 100 permutations
instead of 1000 (fewer classes for a short run; the paper compares sets of 100 to 1000) and 8-pixel tiles instead of 64 (what a 28-pixel image holds); the image rows'
optimizer (LARS 2.0) instead of SGD. Not tuned.

imagenet2012: the paper's geometry: 225-pixel crops of the 256-pixel images, 75-pixel
cells, 64-pixel tiles, 1000 permutations, an MLP of 4096; a ResNet-50 here (the paper
used AlexNet, so its numbers are no target for this backbone), SGD lr 0.1 x B/256,
batch 256, 90 epochs. Not run by us.

cifar10: 30-pixel crops, 10-pixel cells, 9-pixel tiles, 100 permutations, ResNet-18.
No published target for this configuration. Not run by us.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data import presets
from ssl_jax.methods import jigsaw
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet
from ssl_jax.training import optim

STEPS = 910


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, smoke = common.parse_arg(arg)
  config = common.base_config("jigsaw", dataset)
  if dataset == "fashion_mnist":
    recipes.fashion_mnist_budget(config, STEPS)
    config.views.crops = views.group(count=1, **{**recipes.FASHION_MNIST_VIEWS, "crop_size": 27,
                                                 "crop_scale": (0.5, 1.0)})
    config.jigsaw = jigsaw.default_config()
    config.optimizer = optim.default_config(name="lars", learning_rate=2.0, warmup_steps=50)
  else:
    imagenet = dataset == "imagenet2012"
    config.global_batch_size = 256
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = (90 if imagenet else 200) * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval.monitor_every_steps = 10 * steps_per_epoch
    config.model = (resnet.default_config(50, small_image_stem=False) if imagenet
                    else resnet.default_config(18))
    config.views.crops = views.group(count=1, crop_size=225 if imagenet else 30,
                                     crop_scale=(0.5, 1.0), jitter_prob=0.0)
    config.jigsaw = (jigsaw.default_config(num_permutations=1000, tile_gap=11, hidden_dim=4096)
                     if imagenet else jigsaw.default_config())
    config.optimizer = optim.default_config(name="sgd", learning_rate=0.1, weight_decay=5e-4,
                                            momentum=0.9)
    if imagenet:
      config.eval.test_split = "validation"
      config.eval.monitor_test_split = "validation[:10000]"
  if smoke:
    config.jigsaw.num_permutations, config.jigsaw.hidden_dim = 10, 16
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

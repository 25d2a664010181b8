"""Colorization (Zhang et al. 2016, arXiv:1603.08511) on a colour dataset preset.

    python -m ssl_jax.data.prepare photo_crops     # once: the offline colour dataset
    python -m experiments.colorization --workdir /tmp/colorization_photo_crops
    python -m experiments.colorization --dataset cifar10 --workdir gs://BUCKET/colorization_cifar10

photo_crops (the default; ssl_jax/data/builders/photo_crops.py): 32x32 crops of three colour
photographs, 6000 train / 900 test, the label being the photograph. ResNet-18 at width
0.25, batch 256, 300 steps (13 epochs), random resized crops (scale 0.3-1) and flips, no
colour distortion (the colours are the targets), a 4x4 grid of 8-pixel cells over 261 ab
bins, AdamW lr 1e-3. A functional test of the colour pipeline on real photographs, not a
benchmark: three photographs, and telling them apart is easy. Its measured numbers are in
docs/results.md.

cifar10 / imagenet2012: the same objective on a ResNet-18 / ResNet-50 (the paper used a
VGG-style fully convolutional network predicting every pixel, so its numbers are no
target here). Not run by us.

fashion_mnist: grey images have no colour (every target is the neutral bin), so only the
smoke config exists, for the method contract's mechanics.
"""
import ml_collections

from experiments import common
from ssl_jax.core import errors
from ssl_jax.data import presets
from ssl_jax.methods import colorization
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet
from ssl_jax.training import optim

STEPS = 300


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, smoke = common.parse_arg(arg, default_dataset="photo_crops")
  if dataset == "fashion_mnist" and not smoke:
    raise errors.ConfigError("colorization needs colour images and Fashion-MNIST is grey: "
                               "use --dataset photo_crops (built offline), cifar10 or imagenet2012")
  config = common.base_config("colorization", dataset)
  size = config.data.image_size
  config.views.crops = views.group(count=1, crop_size=size, crop_scale=(0.3, 1.0),
                                   jitter_prob=0.0, grayscale_prob=0.0)
  config.colorization = colorization.default_config()
  config.optimizer = optim.default_config(name="adamw", learning_rate=1e-3, weight_decay=1e-4,
                                          warmup_steps=30)
  if dataset in ("photo_crops", "fashion_mnist"):
    config.global_batch_size = 256
    config.total_steps = STEPS
    config.log_every_steps = 25
    config.checkpoint_every_steps = STEPS // 2
    config.eval.monitor_every_steps = STEPS // 2
    config.model = resnet.default_config(18, width_multiplier=0.25)
    config.colorization.grid = 4 if dataset == "photo_crops" else 2  # 28 = 2 x 14
    if dataset == "photo_crops":  # 6000 / 900 records: the monitor reads whole splits
      config.eval.monitor_train_split, config.eval.monitor_test_split = "train", "test"
  else:
    imagenet = dataset == "imagenet2012"
    config.global_batch_size = 256
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = (30 if imagenet else 200) * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval.monitor_every_steps = 10 * steps_per_epoch
    config.model = (resnet.default_config(50, small_image_stem=False) if imagenet
                    else resnet.default_config(18))
    config.colorization.grid = 7 if imagenet else 4
    if imagenet:
      config.eval.test_split = "validation"
      config.eval.monitor_test_split = "validation[:10000]"
  if smoke:
    config.colorization.decoder_hidden_dim, config.colorization.bin_size = 16, 40.0
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

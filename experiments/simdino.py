"""SimDINO (Wu et al. 2025, arXiv:2502.10385) on any dataset preset.

    python -m experiments.simdino --workdir /tmp/simdino_fashion_mnist
    python -m experiments.simdino --dataset imagenet2012 --workdir gs://BUCKET/simdino_in1k

fashion_mnist: the DINO row's setting with DINO's machinery removed, at the results
table's budget (experiments/recipes.fashion_mnist_budget: ResNet-18 width 0.25, batch
256; 550 steps, as DINO's: without local crops a step costs what DINO's does, 251-257
images/s here), 2 x 24x24 global crops (scale 0.3-1), head 512-512-128 with BN (the
ResNet's all-positive pooled features need it, as in the DINO row), LARS lr 2.0 with 50
warm-up steps, eps and the coding rate's input (the mean of student and teacher features)
the official code's (see methods/simdino.py). Chosen on the validation split
(`--validation`, docs/results.md "Choosing the recipes"), as DINO's: no local crops
(count 0; `--config.views.local_crops.count=4` brings 12x12 ones back), τ constant at 0.99
(the paper: 0.996 -> 1), and the coding-rate weight at 0.2 times the official balancing
factor: at 1 the rate term outweighed the alignment 3 to 1 and the features stayed 4.5
(linear) below random weights; at 0.2 they are 2.1 below (linear) and level (kNN). Still
below random weights: SimDINO has no recipe here that learns useful features in ~2 epochs.
Measured in the README's results table (`python -m experiments.table`).

imagenet2012: the official recipe where a ResNet-50 can follow it: batch 1024, 100
epochs, 2 global crops 224 (scale 0.4-1) and 10 local crops 96 (scale 0.05-0.4), head
2048-2048-256 with BN, τ_base 0.996 cosine to 1, LARS lr 0.3 x B/256 with 10 warm-up
epochs (DINO's ResNet-50 optimizer; the official SimDINO runs are ViTs with AdamW). The
published targets are ViT-B/16's, 100 epochs: 74.9% k-NN and 77.3% linear top-1 (the
official README; DINO at the same budget: 72.9% / 76.3%); there is no published ResNet
number, and the ViT backbone is not in this framework yet. Not run by us.

Variant vit_b16 (--variant vit_b16): the published ViT-B/16 setting at 100 epochs with
DINO's released ViT-B/16 arguments (batch 1024, AdamW lr 7.5e-4 x B/256, 10 warm-up
epochs, cosine to 2e-6, wd 0.04 held constant, gradient clip 3.0, drop path 0.1, 2 global
crops 224 (0.25-1) and 10 local crops 96 (0.05-0.25)), head 2048-2048-256 without BN as
the official SimDINO head; the SimDINO configs' own optimizer values are not checked
here. Target: 77.3% linear, 74.9% k-NN (the official README). Not run by us.

cifar10: the same on 32x32 images: ResNet-50 with the small-image stem, batch 512, 800
epochs, 2 x 32x32 global and 6 x 16x16 local crops, no blur. No published target. Not run
by us.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data import presets
from ssl_jax.methods import simdino
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet, vit
from ssl_jax.training import optim

STEPS = 550


def vit_b16(config: ml_collections.ConfigDict) -> None:
  """SimDINO's ViT-B/16 at 100 epochs, in place (the docstring's variant)."""
  common.require_dataset(config, "vit_b16", "imagenet2012")
  config.global_batch_size = 1024
  steps_per_epoch = presets.train_examples("imagenet2012") // config.global_batch_size
  config.total_steps = 100 * steps_per_epoch
  config.model = vit.default_config("B", patch_size=16, drop_path_rate=0.1)
  config.views.global_crops.crop_scale = (0.25, 1.0)
  config.views.local_crops.crop_scale = (0.05, 0.25)
  config.simdino = simdino.default_config(use_bn_in_head=False)
  config.optimizer = optim.default_config(name="adamw", learning_rate=7.5e-4, weight_decay=0.04,
                                          grad_clip_norm=3.0, warmup_steps=10 * steps_per_epoch,
                                          end_learning_rate=2e-6)


VARIANTS = {"vit_b16": vit_b16}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, variant, smoke = common.parse(arg, variants=VARIANTS)
  config = common.base_config("simdino", dataset)
  if dataset == "fashion_mnist":
    recipes.fashion_mnist_budget(config, STEPS)
    grey = {k: v for k, v in recipes.FASHION_MNIST_VIEWS.items()
            if k not in ("crop_size", "crop_scale")}
    config.views.global_crops = views.group(count=2, crop_size=24, crop_scale=(0.3, 1.0), **grey)
    # Off (count 0), kept so that one override brings multi-crop back.
    config.views.local_crops = views.group(count=0, crop_size=12, crop_scale=(0.1, 0.3), **grey)
    config.simdino = simdino.default_config(head_hidden_dims=(512, 512), bottleneck_dim=128,
                                            use_bn_in_head=True, base_momentum=0.99,
                                            final_momentum=0.99, coding_rate_weight=0.2)
    config.optimizer = optim.default_config(name="lars", learning_rate=2.0, warmup_steps=50)
  else:
    imagenet = dataset == "imagenet2012"
    config.global_batch_size = 1024 if imagenet else 512
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = (100 if imagenet else 800) * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval.monitor_every_steps = 10 * steps_per_epoch
    config.model = resnet.default_config(50, small_image_stem=not imagenet)
    colour = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, grayscale_prob=0.2,
                  jitter_prob=0.8)
    size = config.data.image_size
    config.views.global_crops = views.group(count=2, crop_size=size, crop_scale=(0.4, 1.0),
                                            blur_prob=0.55 if imagenet else 0.0,
                                            solarize_prob=0.1, **colour)
    config.views.local_crops = views.group(count=10 if imagenet else 6,
                                           crop_size=96 if imagenet else 16,
                                           crop_scale=(0.05, 0.4),
                                           blur_prob=0.5 if imagenet else 0.0, **colour)
    config.simdino = simdino.default_config(use_bn_in_head=True)
    config.optimizer = optim.default_config(name="lars", learning_rate=0.3, weight_decay=1e-6,
                                            warmup_steps=10 * steps_per_epoch)
    if imagenet:
      config.eval.test_split = "validation"
      config.eval.monitor_test_split = "validation[:10000]"
  if variant:
    VARIANTS[variant](config)
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

"""RotNet (Gidaris et al. 2018, arXiv:1803.07728) on any dataset preset.

    python -m experiments.rotation --workdir /tmp/rotation_fashion_mnist
    python -m experiments.rotation --dataset cifar10 --workdir gs://BUCKET/rotation_cifar10

fashion_mnist: the results table's budget (ResNet-18 width 0.25, batch 256, LARS lr 2.0
with 50 warm-up steps), one crop of 24 pixels (scale 0.2-1, flips, the demo's jitter)
shown at all four rotations. 260 steps: SimCLR's 650-step minutes at this step's
measured cost (docs/results.md). Against the paper's CIFAR recipe (below): the image
rows' optimizer (LARS 2.0, wd 1e-6) instead of SGD lr 0.1 with wd 5e-4, and a ResNet-18
instead of the paper's NIN. Not tuned.

cifar10: batch 128 images x 4 rotations, SGD lr 0.1 (Nesterov, momentum 0.9), wd 5e-4,
100 epochs, flips and crops, on a ResNet-18. The paper's numbers are for NIN (CIFAR-10)
and AlexNet (ImageNet) backbones, which this framework does not provide, so there is no
comparable published target. Not run by us.

imagenet2012: the same recipe on a ResNet-50, batch 192 x 4, 30 epochs. Not run by us.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data import presets
from ssl_jax.methods import rotation
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet
from ssl_jax.training import optim

STEPS = 260


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, smoke = common.parse_arg(arg)
  config = common.base_config("rotation", dataset)
  config.rotation = rotation.default_config()
  if dataset == "fashion_mnist":
    recipes.fashion_mnist_budget(config, STEPS)
    config.views.crops = views.group(count=1, **recipes.FASHION_MNIST_VIEWS)
    config.optimizer = optim.default_config(name="lars", learning_rate=2.0, warmup_steps=50)
  else:
    imagenet = dataset == "imagenet2012"
    config.global_batch_size = 192 if imagenet else 128
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = (30 if imagenet else 100) * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval.monitor_every_steps = 10 * steps_per_epoch
    size = config.data.image_size
    config.model = (resnet.default_config(50, small_image_stem=False) if imagenet
                    else resnet.default_config(18))
    config.views.crops = views.group(count=1, crop_size=size, crop_scale=(0.5, 1.0),
                                     jitter_prob=0.0, grayscale_prob=0.0)
    config.optimizer = optim.default_config(name="sgd", learning_rate=0.1, weight_decay=5e-4,
                                            momentum=0.9, nesterov=True)
    if imagenet:
      config.eval.test_split = "validation"
      config.eval.monitor_test_split = "validation[:10000]"
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

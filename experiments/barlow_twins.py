"""Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230) on any dataset preset.

    python -m experiments.barlow_twins --workdir /tmp/barlow_twins_fashion_mnist
    python -m experiments.barlow_twins --dataset imagenet2012 --workdir gs://BUCKET/bt_in1k

fashion_mnist: the results table's budget (experiments/recipes.fashion_mnist_budget:
ResNet-18 width 0.25, batch 256; 700 steps: SimCLR's 650-step minutes at this step's
cost, 0.93x SimCLR's, `python -m ssl_jax.tools.bench --experiment
barlow_twins:fashion_mnist`), BYOL's asymmetric views (blur 1.0/0.1, solarize 0.0/0.2)
on the demo's grey-image crops, LARS lr 2.0 with 50 warm-up steps, projector
1024-1024-1024 and the paper's lambda = 5.1e-3 unscaled (see methods/barlow_twins.py).
Against the paper (below): the SimCLR demo's optimizer (LARS 2.0, wd 1e-6; the paper's
0.2 x B/256 would be 0.2, wd 1.5e-6), shared by the image rows; an 8x narrower projector
for the 16x narrower backbone (the paper reports accuracy growing with the projector's
width); the paper's views and lambda. Not tuned: the row already scores above the pixels.
Measured in the README's results table (`python -m experiments.table`).

imagenet2012: the paper's recipe: ResNet-50, batch 2048, 1000 epochs, LARS lr 0.2 x B/256
with 10 warm-up epochs, cosine, wd 1.5e-6, projector 8192-8192-8192, lambda 5.1e-3, BYOL's
augmentations. The paper's biases and BN parameters train at lr 0.0048, a 42x smaller rate
we do not give them (the optimizer has no per-group rate). Target: 73.2% linear top-1
(paper, Table 1). Not run by us.

cifar10: solo-learn's recipe (scripts/pretrain/cifar/barlow.yaml): ResNet-18, batch 256,
1000 epochs, LARS lr 0.3, wd 1e-4, projector 2048-2048-2048, lambda 5.1e-3, no blur.
solo-learn reports 92.10% linear top-1. Not run by us.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data import presets
from ssl_jax.methods import barlow_twins
from ssl_jax.models import resnet
from ssl_jax.training import optim

STEPS = 700


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, smoke = common.parse_arg(arg)
  config = common.base_config("barlow_twins", dataset)
  if dataset == "fashion_mnist":
    recipes.fashion_mnist_budget(config, STEPS)
    recipes.asymmetric_views(config, blur=True, **recipes.FASHION_MNIST_VIEWS)
    config.barlow_twins = barlow_twins.default_config(projection_hidden_dims=(1024, 1024),
                                                      projection_dim=1024)
    config.optimizer = optim.default_config(name="lars", learning_rate=2.0, warmup_steps=50)
  else:
    imagenet = dataset == "imagenet2012"
    config.global_batch_size = 2048 if imagenet else 256
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = 1000 * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval.monitor_every_steps = 10 * steps_per_epoch
    size = config.data.image_size
    config.model = (resnet.default_config(50, small_image_stem=False) if imagenet
                    else resnet.default_config(18))
    recipes.asymmetric_views(config, blur=imagenet, crop_size=size, brightness=0.4,
                              contrast=0.4, saturation=0.2, hue=0.1)
    width = 8192 if imagenet else 2048
    config.barlow_twins = barlow_twins.default_config(projection_hidden_dims=(width, width),
                                                      projection_dim=width)
    config.optimizer = optim.default_config(
        name="lars", learning_rate=0.2 if imagenet else 0.3,
        weight_decay=1.5e-6 if imagenet else 1e-4, warmup_steps=10 * steps_per_epoch,
        lr_scaling="linear" if imagenet else "none")
    if imagenet:
      config.eval.test_split = "validation"
      config.eval.monitor_test_split = "validation[:10000]"
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

"""SimCLR on CIFAR-10 with a ResNet-50 (small-image stem), following the SimCLR paper's
CIFAR-10 setting (Chen et al. 2020, arXiv:2002.05709, Appendix B.9).

    python -m ssl_jax.data.prepare cifar10 --data_dir $TFDS_DATA_DIR   # needs the internet once
    python -m experiments.simclr_cifar10 --workdir gs://BUCKET/simclr_cifar10

Target: the paper reports 94.0% linear-evaluation top-1 on CIFAR-10 for ResNet-50
trained 1000 epochs at batch 1024 with temperature 0.5 and colour strength 0.5
(Appendix B.9). This config has not been run to completion by us; a
ResNet-18 (--config.model.depth=18) is the cheaper variant solo-learn and lightly report.
"""
import ml_collections

from experiments import common
from ssl_jax import evaluate, optim, train
from ssl_jax.data import augment
from ssl_jax.methods import simclr

CIFAR10_TRAIN_IMAGES = 50_000


def get_config() -> ml_collections.ConfigDict:
  config = train.default_config()
  config.method = "simclr"
  config.global_batch_size = 1024
  epochs = 1000
  config.total_steps = epochs * CIFAR10_TRAIN_IMAGES // config.global_batch_size
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.knn_every_steps = 5000

  config.data = ml_collections.ConfigDict()
  config.data.name = "cifar10"         # TFDS catalogue name, prepared as ArrayRecord
  config.data.data_dir = ml_collections.config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.data.train_split = "train"
  config.data.image_size = 32
  config.data.mean = (0.4914, 0.4822, 0.4465)
  config.data.std = (0.2470, 0.2435, 0.2616)

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet"
  config.model.depth = 50
  config.model.width_multiplier = 1.0
  config.model.small_image_stem = True

  # Colour strength s=0.5 (0.4/0.4/0.4/0.1); no blur on 32x32 images, as in the paper.
  config.augment = augment.default_view_config(crop_size=32)
  config.simclr = simclr.default_config(temperature=0.5, projection_hidden_dims=(2048,),
                                        projection_dim=128)
  config.optimizer = optim.default_config(
      name="lars", learning_rate=1.0, lr_scaling="linear", weight_decay=1e-6,
      warmup_steps=10 * CIFAR10_TRAIN_IMAGES // config.global_batch_size)
  config.eval = evaluate.default_config()
  return config


if __name__ == "__main__":
  common.main(get_config)

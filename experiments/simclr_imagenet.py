"""SimCLR on ImageNet-1k with a ResNet-50: the paper's main setting (Chen et al. 2020,
arXiv:2002.05709, Section 4 and Appendix B.1).

    # on a TPU VM with the dataset prepared as ArrayRecord by TFDS in a bucket:
    TFDS_DATA_DIR=gs://BUCKET/tensorflow_datasets \
      python -m experiments.simclr_imagenet --workdir gs://BUCKET/simclr_imagenet

Recipe: batch 4096, LARS with lr 0.3 x batch/256 = 4.8, weight decay 1e-6 (not on
biases/BN), 10 warm-up epochs then cosine decay, temperature 0.1, projection
2048-2048-128, 224x224 views with crop scale (0.08, 1), colour strength 1.0, blur.
Target: 69.3% linear-evaluation top-1 for ResNet-50 (1x) after 1000 epochs, the paper's
Table 6. Not run by us: it needs a pod slice (shorter schedules: --config.total_steps).
"""
import ml_collections

from experiments import common
from ssl_jax import evaluate, optim, train
from ssl_jax.data import augment
from ssl_jax.methods import simclr

IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config() -> ml_collections.ConfigDict:
  config = train.default_config()
  config.method = "simclr"
  config.global_batch_size = 4096
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.global_batch_size
  config.total_steps = 1000 * steps_per_epoch
  config.log_every_steps = 100
  config.checkpoint_every_steps = 5000
  config.knn_every_steps = 10 * steps_per_epoch
  config.knn.train_split = "train[:50000]"
  config.knn.test_split = "validation[:10000]"
  config.eval_batch_size = 1024

  config.data = ml_collections.ConfigDict()
  config.data.name = "imagenet2012"
  config.data.data_dir = ml_collections.config_dict.placeholder(str)  # None: $TFDS_DATA_DIR (e.g. gs://...) or ~/tensorflow_datasets
  config.data.train_split = "train"
  config.data.host_resize = 256        # decode + resize/center-crop on the host to a fixed size
  config.data.image_size = 224
  config.data.mean = (0.485, 0.456, 0.406)
  config.data.std = (0.229, 0.224, 0.225)

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet"
  config.model.depth = 50
  config.model.width_multiplier = 1.0
  config.model.small_image_stem = False

  config.augment = augment.default_view_config(
      crop_size=224, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_prob=0.5)
  config.simclr = simclr.default_config(temperature=0.1, projection_hidden_dims=(2048,),
                                        projection_dim=128)
  config.optimizer = optim.default_config(
      name="lars", learning_rate=0.3, lr_scaling="linear", weight_decay=1e-6,
      warmup_steps=10 * steps_per_epoch)
  config.eval = evaluate.default_config()
  config.eval.test_split = "validation"
  return config


if __name__ == "__main__":
  common.main(get_config)

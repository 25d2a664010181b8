"""SimCLR (Chen et al. 2020, arXiv:2002.05709) on any dataset preset.

    python -m experiments.simclr --workdir /tmp/simclr_fashion_mnist
    python -m experiments.simclr --dataset cifar10 --workdir gs://BUCKET/simclr_cifar10
    TFDS_DATA_DIR=gs://BUCKET/tensorflow_datasets \\
      python -m experiments.simclr --dataset imagenet2012 --workdir gs://BUCKET/simclr_in1k

fashion_mnist (sized for 2 CPU cores): ResNet-18 at width 0.25 (16-32-64-128 channels,
3x3 stride-1 stem), batch 256 (512 views of 24x24; evaluation sees 28x28), 650 steps,
LARS lr 2.0 (wd 1e-6, 50 warm-up steps), T = 0.1, projection 512-128. Against the paper
(ImageNet: ResNet-50, batch 4096, LARS 0.3 x B/256, T 0.1, projection 2048-2048-128, crop
scale 0.08-1, colour strength 1.0, blur; CIFAR: T 0.5, no blur):
  - the backbone, batch and steps fit the CPU budget (the paper's Fig. 9: small batches
    need longer training, which this budget cannot give);
  - lr 2.0 (0.3 x B/256 would be 0.3): at 200 steps 2.0 scored ~0.7 points of linear
    probe above 1.0, and 4.0 no better; T = 0.1 ~0.7 above 0.2, both together 1.8. These
    were first measured on 2026-11-23 with the test split, before the validation split
    existed; the same 200-step comparison on validation (`--validation`) confirms them:
    lr 2.0 with T 0.1 3.3 / 2.4 points (linear / kNN) above lr 1.0 with T 0.2
    (docs/results.md). The other image rows share this optimizer;
  - crop scale 0.2-1 (scale >= 0.4 was worse at 200 steps), brightness and contrast
    jitter only (grey images have no saturation or hue), no blur (as the paper's CIFAR
    recipe: a 24-pixel crop has no room for an ImageNet kernel).

cifar10: ResNet-50 (small-image stem), batch 1024, 1000 epochs, LARS lr 1.0 x B/256,
T = 0.5, colour strength 0.5, no blur. Target: 94.0% linear-evaluation top-1, the paper's
Appendix B.9. Not run by us.

imagenet2012: ResNet-50, batch 4096, 1000 epochs, LARS lr 0.3 x B/256 = 4.8, wd 1e-6,
T = 0.1, projection 2048-2048-128, 224x224 views, colour strength 1.0, blur. Target: 69.3%
linear-evaluation top-1, the paper's Table 6. Not run by us: it needs a pod slice.
"""
import ml_collections

from experiments import common
from ssl_jax.data import presets
from ssl_jax.methods import simclr
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet
from ssl_jax.training import optim

def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, smoke = common.parse_arg(arg)
  config = common.base_config("simclr", dataset)
  if dataset == "fashion_mnist":
    config.global_batch_size = 256       # images per step (512 views)
    config.total_steps = 650             # ~2.8 epochs: what 2 CPU cores do in ~8 minutes
    config.log_every_steps = 25
    config.checkpoint_every_steps = 325
    config.eval.monitor_every_steps = 325
    config.model = resnet.default_config(18, width_multiplier=0.25)
    # Grey images: no saturation/hue/grayscale; milder crops than ImageNet's 0.08. Views
    # are 24x24 while evaluation sees the full 28x28: a step costs 0.70 s instead of 1.03 s.
    config.views.pair = views.group(
        count=2, crop_size=24, crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
        saturation=0.0, hue=0.0, grayscale_prob=0.0, jitter_prob=0.8)
    # At 200 steps, T=0.1 and lr 2.0 each gained ~0.7 points of linear probe over T=0.2 and
    # lr 1.0, 1.8 together; lr 4.0 was no better than 2.0; crops of scale >= 0.4 were worse.
    config.simclr = simclr.default_config(temperature=0.1, projection_hidden_dims=(512,))
    config.optimizer = optim.default_config(name="lars", learning_rate=2.0, warmup_steps=50)
  elif dataset == "cifar10":
    config.global_batch_size = 1024
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = 1000 * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.eval.monitor_every_steps = 5000
    config.model = resnet.default_config(50)
    config.views.pair = views.group(count=2, crop_size=32)  # strength 0.5, no blur
    config.simclr = simclr.default_config(temperature=0.5)
    config.optimizer = optim.default_config(name="lars", learning_rate=1.0,
                                            warmup_steps=10 * steps_per_epoch)
  else:
    config.global_batch_size = 4096
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = 1000 * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.model = resnet.default_config(50, small_image_stem=False)
    config.views.pair = views.group(count=2, crop_size=224, brightness=0.8, contrast=0.8,
                                    saturation=0.8, hue=0.2, blur_prob=0.5)
    config.simclr = simclr.default_config(temperature=0.1)
    config.optimizer = optim.default_config(name="lars", learning_rate=0.3,
                                            warmup_steps=10 * steps_per_epoch)
    config.eval.test_split = "validation"
    config.eval.batch_size = 1024
    config.eval.monitor_every_steps = 10 * steps_per_epoch
    config.eval.monitor_train_split = "train[:50000]"
    config.eval.monitor_test_split = "validation[:10000]"
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

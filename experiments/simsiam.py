"""SimSiam (Chen & He 2021, arXiv:2011.10566) on any dataset preset.

    python -m experiments.simsiam --workdir /tmp/simsiam_fashion_mnist
    python -m experiments.simsiam --dataset cifar10 --workdir gs://BUCKET/simsiam_cifar10

fashion_mnist: the results table's budget (experiments/recipes.fashion_mnist_budget:
ResNet-18 width 0.25, batch 256; 670 steps: SimCLR's 650-step minutes at this step's
cost, 0.97x SimCLR's, `python -m ssl_jax.tools.bench --experiment simsiam:fashion_mnist`), the
SimCLR demo's views, projector 512-512-512 and predictor 512-128-512 (the paper's 2048 /
512 at a quarter width), predictor at a fixed lr. The optimizer, chosen on the validation
split (`--validation`, docs/results.md "Choosing the recipes"): SGD lr 0.5 (x B/256),
momentum 0.9, wd 1e-5, 50 warm-up steps, cosine: solo-learn's CIFAR setting for SimSiam.
The paper's CIFAR optimizer (SGD lr 0.03 x B/256, wd 5e-4) is tuned for 800 epochs; at
lr 0.05 with wd 5e-4 (and zero-init residual blocks) this 3-epoch run learned less than
random weights. The SimCLR demo's LARS lr 2.0, used before, collapsed the embeddings to
an effective rank of 11 of 512 (60 with this optimizer), and its kNN probe ended 0.7
above random init on test (3.9 on validation with this one). Measured in the README's
results table (`python -m experiments.table`).

imagenet2012: the paper's recipe: ResNet-50, batch 512, 100 epochs, SGD lr 0.05 x B/256,
momentum 0.9, wd 1e-4, cosine, no warm-up; projector 2048-2048-2048, predictor 512, fixed
predictor lr; BYOL's symmetric augmentations (blur 0.5). Target: 68.1% linear top-1
(paper, Table 1 last row and Table 4; the official README). Not run by us.

cifar10: the paper's Appendix D: ResNet-18 (small-image stem), batch 512, 800 epochs, SGD
lr 0.03 x B/256, wd 5e-4, projector 2 layers of 2048, no blur. Target: 91.8% (Appendix
D). Not run by us.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data import presets
from ssl_jax.methods import simsiam
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet
from ssl_jax.training import optim

STEPS = 670


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, smoke = common.parse_arg(arg)
  config = common.base_config("simsiam", dataset)
  if dataset == "fashion_mnist":
    recipes.fashion_mnist_budget(config, STEPS)
    config.views.pair = views.group(count=2, **recipes.FASHION_MNIST_VIEWS)
    config.simsiam = simsiam.default_config(projection_hidden_dims=(512, 512),
                                            projection_dim=512, predictor_hidden_dims=(128,))
    config.optimizer = optim.default_config(name="sgd", learning_rate=0.5, weight_decay=1e-5,
                                            warmup_steps=50)
  else:
    imagenet = dataset == "imagenet2012"
    config.global_batch_size = 512
    steps_per_epoch = presets.train_examples(dataset) // config.global_batch_size
    config.total_steps = (100 if imagenet else 800) * steps_per_epoch
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval.monitor_every_steps = 10 * steps_per_epoch
    size = config.data.image_size
    config.model = (resnet.default_config(50, small_image_stem=False) if imagenet
                    else resnet.default_config(18))
    config.views.pair = views.group(count=2, crop_size=size, crop_scale=(0.2, 1.0),
                                    brightness=0.4, contrast=0.4,
                                    saturation=0.4, hue=0.1,
                                    blur_prob=0.5 if imagenet else 0.0)
    config.simsiam = simsiam.default_config(
        projection_hidden_dims=(2048, 2048) if imagenet else (2048,))
    config.optimizer = optim.default_config(
        name="sgd", learning_rate=0.05 if imagenet else 0.03,
        weight_decay=1e-4 if imagenet else 5e-4,
        momentum=0.9)
    if imagenet:
      config.eval.test_split = "validation"
      config.eval.monitor_test_split = "validation[:10000]"
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

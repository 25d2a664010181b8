"""CLIP (Radford et al. 2021, arXiv:2103.00020) on paired images and captions.

    python -m experiments.clip --workdir /tmp/clip_fashion_mnist_captions    # the default
    python -m experiments.clip --dataset coco_captions --workdir gs://BUCKET/clip_coco

fashion_mnist_captions (the default; ssl_jax/data/builders/fashion_mnist_captions.py): a
functional test, not a result: every caption is written from its image's label with
hand-made templates, so matching them is learning the ten classes. The image encoder is
the results table's ResNet-18 at width 0.25 (24-pixel crops, flips), the text encoder a
2-block post-norm Transformer of width 64 over 16 tokens of a 256-piece tokenizer, a
128-d joint space, batch 256, AdamW lr 1e-3 (wd 0.1) with 50 warm-up steps, 200 steps.
Evaluated by zero-shot classification with prompts "a photo of a {}." (a template the
captions never use), next to chance, random init and the linear probe.

coco_captions: the paper's recipe in shape (a ResNet-50 image encoder, a 12-layer 512-wide
text Transformer at context 77, joint space 1024, batch 32768, AdamW with decoupled wd 0.2,
cosine schedule, temperature initialised to 0.07 and clipped at 100) on TFDS's COCO
captions (first caption of each image) instead of the paper's 400M pairs; the paper's
ResNet-50 zero-shot ImageNet top-1 of 59.6% (Table 11) is for that data, so no target
here. Not run by us.

Variant vit_b16 (--variant vit_b16; coco_captions): the paper's ViT-B/16 in shape: the image
tower a ViT-B/16 (class token), the text tower 12 layers 512 wide with 8 heads, joint
space 512, batch 32768. The paper's 68.3% zero-shot ImageNet top-1 (Table 10) is for its
400M pairs; on COCO there is no target. For compiling and memory planning
(ssl_jax/tools/aot.py). Not run by us.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data.builders import fashion_mnist_captions
from ssl_jax.methods import clip
from ssl_jax.methods.lib import views
from ssl_jax.models import resnet, transformer, vit
from ssl_jax.training import optim

STEPS = 200
CONTRACT_DATASET = "fashion_mnist_captions"  # the method contract's smoke dataset


def vit_b16(config: ml_collections.ConfigDict) -> None:
  """CLIP ViT-B/16's towers, in place (the docstring's variant)."""
  common.require_dataset(config, "vit_b16", "coco_captions")
  config.model = vit.default_config("B", patch_size=16)
  config.text_model = transformer.default_config("small", config.data, causal=False,
                                                  depth=12, width=512, num_heads=8,
                                                  dropout_rate=0.0)
  config.clip.embed_dim = 512


VARIANTS = {"vit_b16": vit_b16}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, variant, smoke = common.parse(arg, default_dataset="fashion_mnist_captions",
                                         variants=VARIANTS)
  config = common.base_config("clip", dataset)
  config.clip = clip.default_config()
  if dataset == "fashion_mnist_captions":
    config.model = resnet.default_config(18, width_multiplier=0.25)
    config.text_model = transformer.default_config("tiny", config.data, causal=False)
    config.views.crops = views.group(count=1, **{**recipes.FASHION_MNIST_VIEWS,
                                                 "jitter_prob": 0.0})
    config.global_batch_size = 256
    config.total_steps = STEPS
    config.log_every_steps = 25
    config.checkpoint_every_steps = STEPS // 2
    config.eval.monitor_every_steps = STEPS // 2
    config.eval.modes = "linear,knn,zeroshot"
    config.eval.zeroshot.template = fashion_mnist_captions.ZERO_SHOT_TEMPLATE
    config.eval.zeroshot.class_names = tuple(n[0] for n in fashion_mnist_captions.CLASS_NAMES)
    config.optimizer = optim.default_config(name="adamw", learning_rate=1e-3, weight_decay=0.1,
                                            warmup_steps=50)
  else:
    config.model = resnet.default_config(50, small_image_stem=False)
    config.text_model = transformer.default_config("small", config.data, causal=False,
                                                    depth=12, dropout_rate=0.0)
    config.clip.embed_dim = 1024
    config.views.crops = views.group(count=1, crop_size=224, crop_scale=(0.5, 1.0),
                                     jitter_prob=0.0, grayscale_prob=0.0)
    config.global_batch_size = 32768
    config.total_steps = 32 * 118_000 // 32768 * 32  # 32 epochs of COCO's 118k images
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100
    config.eval.modes = "none"
    config.optimizer = optim.default_config(name="adamw", learning_rate=5e-4, lr_scaling="none",
                                            b2=0.98, eps=1e-6, weight_decay=0.2, warmup_steps=20)
  if smoke:
    config.text_model.depth, config.text_model.width, config.text_model.num_heads = 1, 16, 2
    config.text_model.mlp_dim = 32
  if variant:
    VARIANTS[variant](config)
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

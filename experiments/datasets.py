"""Dataset presets: the `data` section (and the usual backbone) of each dataset, so a
method config composes with any of them instead of one file per method x dataset."""
import ml_collections

from ssl_jax import optim, validate, views

PRESETS = ("fashion_mnist", "cifar10", "imagenet2012", "photo_crops", "fortunes", "wikipedia",
           "fashion_mnist_captions", "coco_captions")
IMAGE_TEXT_PRESETS = ("fashion_mnist_captions", "coco_captions")
TEXT_PRESETS = ("fortunes", "wikipedia")
TRAIN_IMAGES = {"fashion_mnist": 60_000, "cifar10": 50_000, "imagenet2012": 1_281_167,
                "photo_crops": 6_000}
TRAIN_TEXTS = {"fortunes": 13_571}


def data_config(name: str) -> ml_collections.ConfigDict:
  """config.data for a preset: where the records are, what they hold, how to normalise."""
  if name not in PRESETS:
    raise ValueError(f"dataset preset {name!r} does not exist; available: {PRESETS}")
  if name in TEXT_PRESETS:
    return text_data_config(name)
  if name in IMAGE_TEXT_PRESETS:
    return image_text_data_config(name)
  data = ml_collections.ConfigDict()
  data.name = name                      # TFDS name (fashion_mnist: the offline Debian build)
  data.data_dir = ml_collections.config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  data.train_split = "train"            # split pretraining reads
  data.features = ("image", "label")    # record features the loader reads
  data.label_key = "label"              # feature the probes classify
  data.modality = "image"               # raw-input baseline: normalised pixels
  data.host_resize = 0                  # >0: fit variable-size images to this square on the host
  if name == "fashion_mnist":
    data.image_size = 28                # side of the evaluation inputs
    data.mean = (0.2860,)               # per-channel mean of the train images in [0, 1]
    data.std = (0.3530,)                # per-channel std of the train images in [0, 1]
  elif name == "photo_crops":           # ssl_jax/data/photo_crops.py: colour, built offline
    data.image_size = 32
    data.mean = (0.4180, 0.3749, 0.3354)
    data.std = (0.3557, 0.2884, 0.2869)
  elif name == "cifar10":
    data.image_size = 32
    data.mean = (0.4914, 0.4822, 0.4465)
    data.std = (0.2470, 0.2435, 0.2616)
  else:
    data.host_resize = 256              # decode + resize/centre-crop on the host to one size
    data.image_size = 224
    data.mean = (0.485, 0.456, 0.406)
    data.std = (0.229, 0.224, 0.225)
  data.lock()
  return data


def text_data_config(name: str, max_length: int = 128) -> ml_collections.ConfigDict:
  """config.data for a text preset: records' `text` tokenised on the host into `tokens`.

  fortunes: the offline corpus (ssl_jax/data/fortunes.py), labelled by `category`, with
  the 8192-piece WordPiece tokenizer trained on its train split (scripts/setup.sh).
  wikipedia: TFDS's `wikipedia/20230601.en` prepared as ArrayRecord on a TPU VM, with a
  30522-piece tokenizer trained on it (`python -m ssl_jax.data.text wikipedia/20230601.en
  --vocab_size 30522`); it has no labels, so only the language-model metrics apply."""
  data = ml_collections.ConfigDict()
  data.name = "fortunes" if name == "fortunes" else "wikipedia/20230601.en"
  data.data_dir = ml_collections.config_dict.placeholder(str)
  data.train_split = "train"
  data.features = ("text", "category") if name == "fortunes" else ("text",)
  data.label_key = "category" if name == "fortunes" else ""  # feature the probes classify
  data.modality = "text"                # raw-input baseline: bag of words (TF-IDF)
  data.text_key = "text"                # feature the tokenizer reads
  data.tokenizer = "wordpiece_8192" if name == "fortunes" else "wordpiece_30522"
  data.vocab_size = 8192 if name == "fortunes" else 30522
  data.max_length = max_length          # tokens per sequence: [CLS] pieces [SEP], padded
  data.lock()
  return data


def image_text_data_config(name: str) -> ml_collections.ConfigDict:
  """config.data for paired images and captions (CLIP): the image fields of an image
  preset plus the caption tokenised on the host into `tokens`.

  fashion_mnist_captions: the offline functional test set (ssl_jax/data/
  fashion_mnist_captions.py) with a 256-piece tokenizer trained on its train captions
  (scripts/setup.sh). coco_captions: TFDS's COCO captions prepared as ArrayRecord on a
  TPU VM (its `captions/text`, first caption; images fitted to 256 on the host), with a
  tokenizer trained on them."""
  captions = name == "fashion_mnist_captions"
  data = ml_collections.ConfigDict()
  data.name = name
  data.data_dir = ml_collections.config_dict.placeholder(str)
  data.train_split = "train"
  data.features = ("image", "label", "caption") if captions else ("image", "captions")
  data.label_key = "label" if captions else ""
  data.modality = "image"               # raw-input baseline of the probes: the pixels
  data.host_resize = 0 if captions else 256
  data.image_size = 28 if captions else 224
  data.mean = (0.2860,) if captions else (0.485, 0.456, 0.406)
  data.std = (0.3530,) if captions else (0.229, 0.224, 0.225)
  data.text_key = "caption" if captions else "captions"
  data.tokenizer = "wordpiece_256" if captions else "wordpiece_32768"
  data.vocab_size = 256 if captions else 32768
  data.max_length = 16 if captions else 77  # CLIP's context length is 77
  data.lock()
  return data


def transformer_config(variant: str, data: ml_collections.ConfigDict, causal: bool,
                       **fields) -> ml_collections.ConfigDict:
  """config.model for ssl_jax/models/transformer.py, sized to the data's vocabulary and
  sequence length: BERT (causal=False: post-norm, mean-pooled) or GPT (causal=True:
  pre-norm, the last token's state)."""
  model = ml_collections.ConfigDict()
  model.name = "transformer"
  model.variant = variant               # tiny | mini | small | base: width, depth, heads, MLP
  model.vocab_size = data.vocab_size
  model.max_length = data.max_length
  model.width = 0                       # > 0 replaces the preset's
  model.depth = 0
  model.num_heads = 0
  model.mlp_dim = 0
  model.causal = causal                 # True: each position sees itself and earlier ones
  model.norm = "pre" if causal else "post"  # GPT-2 pre-norm; BERT post-norm
  model.dropout_rate = 0.1              # both papers'
  model.pool = "last" if causal else "mean"  # features for probes
  model.dtype = "float32"
  model.remat = "none"                  # per-block rematerialisation: none | full | dots
  validate.strict_update(model, fields, "model")
  model.lock()
  return model


def resnet_config(depth: int, width_multiplier: float = 1.0, small_image_stem: bool = True,
                  small_stem_stride: int = 1) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.name = "resnet"                 # module in ssl_jax/models/
  model.depth = depth                   # 10, 18, 34 or 50
  model.width_multiplier = width_multiplier  # scales every channel count
  model.small_image_stem = small_image_stem  # 3x3 stem conv, no max-pool (28/32-pixel inputs)
  model.small_stem_stride = small_stem_stride  # 2: halves the stem's output side (cheaper)
  model.dtype = "float32"               # compute dtype of convolutions (config.precision sets it)
  model.remat = "none"                  # per-block rematerialisation: none | full | dots
  model.lock()
  return model


def vit_config(variant: str, patch_size: int, **fields) -> ml_collections.ConfigDict:
  """config.model for a ViT (ssl_jax/models/vit.py): a preset (Ti | S | B | L) and patch
  size; width, depth or num_heads > 0 replace the preset's."""
  model = ml_collections.ConfigDict()
  model.name = "vit"                    # module in ssl_jax/models/
  model.variant = variant               # Ti | S | B | L: width, depth, heads
  model.patch_size = patch_size         # pixels per patch side; the image side must be a multiple
  model.width = 0                       # > 0: replaces the preset's token width
  model.depth = 0                       # > 0: replaces the preset's number of blocks
  model.num_heads = 0                   # > 0: replaces the preset's attention heads
  model.mlp_ratio = 4.0                 # MLP hidden width / token width
  model.pool = "token"                  # features: class token ("token") or mean of patches ("gap")
  model.drop_path_rate = 0.0            # stochastic depth at the last block (0 at the first)
  model.dtype = "float32"               # compute dtype of the matmuls
  model.remat = "none"                  # per-block rematerialisation: none | full | dots
  validate.strict_update(model, fields, "model")
  model.lock()
  return model

# Fashion-MNIST's grey images have no saturation, hue or colour to drop; the SimCLR demo's
# crops (scale >= 0.4 was worse at 200 steps) and jitter. Every results-table row uses it.
FASHION_MNIST_VIEWS = dict(crop_size=24, crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
                           saturation=0.0, hue=0.0, grayscale_prob=0.0, jitter_prob=0.8)


def fashion_mnist_budget(config: ml_collections.ConfigDict, total_steps: int) -> None:
  """The results table's shared budget, in place: ResNet-18 at width 0.25 (16-32-64-128
  channels, small-image stem), batch 256, `total_steps` steps (each method's share of the
  SimCLR demo's minutes), logs every 25 steps, a checkpoint and a kNN monitor at half."""
  config.global_batch_size = 256
  config.total_steps = total_steps
  config.log_every_steps = 25
  config.checkpoint_every_steps = total_steps // 2
  config.eval.monitor_every_steps = total_steps // 2
  config.model = resnet_config(18, width_multiplier=0.25)


def fortunes_budget(config: ml_collections.ConfigDict, total_steps: int, causal: bool) -> None:
  """The language experiments' shared CPU budget on fortunes, in place: 64-token texts
  (83% fit whole, 93% would fit 128), the "mini" Transformer (the bert_mlm peer's size),
  batch 32, AdamW lr 5e-4 (b2 0.98, wd 0.01) with 100 warm-up steps, a checkpoint at half,
  no in-loop monitor (a kNN pass over text features costs minutes here); evaluated by the
  probes on the 43 categories and the held-out objective."""
  config.data = text_data_config("fortunes", max_length=64)
  config.model = transformer_config("mini", config.data, causal=causal)
  config.global_batch_size = 32
  config.total_steps = total_steps
  config.log_every_steps = 25
  config.checkpoint_every_steps = total_steps // 2
  config.eval.monitor_every_steps = 0
  config.eval.modes = "linear,knn,objective"
  # fortunes is stored category by category: a monitor's kNN bank would be the whole split.
  config.eval.monitor_train_split, config.eval.monitor_test_split = "train", "test"
  config.optimizer = optim.default_config(name="adamw", learning_rate=5e-4, lr_scaling="none",
                                          b2=0.98, weight_decay=0.01, warmup_steps=100)


def held_out_tail(config: ml_collections.ConfigDict) -> None:
  """For a corpus with one split (wikipedia), in place: train on the first 99%, measure
  the objective on the last 1% (no labels, so no probes), no in-loop monitor."""
  config.data.train_split = "train[:99%]"
  config.eval.test_split = "train[99%:]"
  config.eval.modes = "objective"
  config.eval.monitor_every_steps = 0


def asymmetric_views(config: ml_collections.ConfigDict, blur: bool, **augment) -> None:
  """BYOL's two view groups, in place: `first` (blur 1.0, no solarisation) and `second`
  (blur 0.1, solarisation 0.2), otherwise alike; `blur=False` drops the blur (small
  images). BYOL, MoCo v3, Barlow Twins and VICReg train on them."""
  config.views.first = views.group(count=1, blur_prob=1.0 if blur else 0.0, solarize_prob=0.0,
                                   **augment)
  config.views.second = views.group(count=1, blur_prob=0.1 if blur else 0.0, solarize_prob=0.2,
                                    **augment)

"""Dataset presets: the `data` section (and the usual backbone) of each dataset, so a
method config composes with any of them instead of one file per method x dataset."""
import ml_collections

PRESETS = ("fashion_mnist", "cifar10", "imagenet2012")
TRAIN_IMAGES = {"fashion_mnist": 60_000, "cifar10": 50_000, "imagenet2012": 1_281_167}


def data_config(name: str) -> ml_collections.ConfigDict:
  """config.data for a preset: where the records are, what they hold, how to normalise."""
  if name not in PRESETS:
    raise ValueError(f"dataset preset {name!r} does not exist; available: {PRESETS}")
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


def resnet_config(depth: int, width_multiplier: float = 1.0, small_image_stem: bool = True,
                  small_stem_stride: int = 1) -> ml_collections.ConfigDict:
  model = ml_collections.ConfigDict()
  model.name = "resnet"                 # module in ssl_jax/models/
  model.depth = depth                   # 10, 18, 34 or 50
  model.width_multiplier = width_multiplier  # scales every channel count
  model.small_image_stem = small_image_stem  # 3x3 stem conv, no max-pool (28/32-pixel inputs)
  model.small_stem_stride = small_stem_stride  # 2: halves the stem's output side (cheaper)
  model.lock()
  return model

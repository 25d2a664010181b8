"""The fields every preset's data section shares, written once (one function per kind)."""
import ml_collections

from ssl_jax.core import validate


def image(name: str, *, image_size: int, mean: tuple, std: tuple, host_resize: int = 0,
          **overrides) -> ml_collections.ConfigDict:
  """config.data for labelled images."""
  data = ml_collections.ConfigDict()
  data.name = name                      # TFDS name (fashion_mnist: the offline Debian build)
  data.data_dir = ml_collections.config_dict.placeholder(str)  # None: $TFDS_DATA_DIR or ~/tensorflow_datasets
  data.train_split = "train"            # split pretraining reads
  data.features = ("image", "label")    # record features the loader reads
  data.label_key = "label"              # feature the probes classify
  data.modality = "image"               # raw-input baseline: normalised pixels
  data.host_resize = host_resize        # >0: fit variable-size images to this square on the host
  data.image_size = image_size          # side of the evaluation inputs
  data.mean = mean                      # per-channel mean of the train images in [0, 1]
  data.std = std                        # per-channel std of the train images in [0, 1]
  return validate.strict_update(data, overrides, "data")


def text(name: str, *, features: tuple, label_key: str, tokenizer: str, vocab_size: int,
         max_length: int = 128, **overrides) -> ml_collections.ConfigDict:
  """config.data for text: the records' `text` tokenised on the host into `tokens`."""
  data = ml_collections.ConfigDict()
  data.name = name
  data.data_dir = ml_collections.config_dict.placeholder(str)
  data.train_split = "train"
  data.features = features
  data.label_key = label_key            # feature the probes classify ("": none)
  data.modality = "text"                # raw-input baseline: bag of words (TF-IDF)
  data.text_key = "text"                # feature the tokenizer reads
  data.tokenizer = tokenizer
  data.vocab_size = vocab_size
  data.max_length = max_length          # tokens per sequence: [CLS] pieces [SEP], padded
  data.layout = "single"                # single | packed | packed_across | nsp_pairs | sop_pairs
  return validate.strict_update(data, overrides, "data")


def image_text(name: str, *, features: tuple, label_key: str, host_resize: int,
               image_size: int, mean: tuple, std: tuple, text_key: str, tokenizer: str,
               vocab_size: int, max_length: int, **overrides) -> ml_collections.ConfigDict:
  """config.data for paired images and captions (CLIP): the image fields plus the caption
  tokenised on the host into `tokens`."""
  data = ml_collections.ConfigDict()
  data.name = name
  data.data_dir = ml_collections.config_dict.placeholder(str)
  data.train_split = "train"
  data.features = features
  data.label_key = label_key
  data.modality = "image"               # raw-input baseline of the probes: the pixels
  data.host_resize = host_resize
  data.image_size = image_size
  data.mean = mean
  data.std = std
  data.text_key = text_key
  data.tokenizer = tokenizer
  data.vocab_size = vocab_size
  data.max_length = max_length
  return validate.strict_update(data, overrides, "data")


def video(name: str, *, frames: int, image_size: int, mean: tuple, std: tuple,
          **overrides) -> ml_collections.ConfigDict:
  """config.data for labelled videos: `video` uint8 [frames, H, W, C] and one label each.
  The probes classify a video by its frame encoder's features averaged over its frames."""
  data = ml_collections.ConfigDict()
  data.name = name
  data.data_dir = ml_collections.config_dict.placeholder(str)
  data.train_split = "train"
  data.features = ("video", "label")
  data.label_key = "label"
  data.modality = "video"               # raw-input baseline: each frame's pixels, averaged
  data.frames = frames                  # frames per stored video
  data.image_size = image_size          # side of the evaluation frames
  data.mean = mean                      # per-channel mean of the train frames in [0, 1]
  data.std = std                        # per-channel std of the train frames in [0, 1]
  return validate.strict_update(data, overrides, "data")

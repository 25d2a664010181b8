"""Host-side, per-record preprocessing chosen by the data config (pipeline.Preprocess).

The loader knows no modality; this is where a modality's host work lives: fitting
variable-size images to one shape, tokenising text (ssl_jax/data/text.py). Each step is a class
(picklable for grain worker processes).
"""
import numpy as np
import ml_collections


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to `size` (bilinear) and centre-crops a square.

  For datasets whose images differ in size (ImageNet): batches need one shape. The
  random crops happen later, on device, inside this fixed-size image.
  """
  from PIL import Image  # only datasets with variable image sizes need it
  height, width = image.shape[:2]
  if (height, width) == (size, size):
    return image
  scale = size / min(height, width)
  new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
  squeezed = image[..., 0] if image.shape[-1] == 1 else image
  resized = np.asarray(Image.fromarray(squeezed).resize((new_w, new_h), Image.BILINEAR))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  resized = resized[top:top + size, left:left + size]
  return resized[..., None] if resized.ndim == 2 else resized


class FitImage:
  """Fits record[key] to a `size` x `size` image (fit_image)."""

  def __init__(self, size: int, key: str = "image"):
    self.size, self.key = int(size), key

  def __call__(self, record: dict) -> dict:
    return {**record, self.key: fit_image(np.asarray(record[self.key]), self.size)}


def from_config(data: ml_collections.ConfigDict):
  """The host preprocess a data config asks for, or None: `host_resize` fits images,
  `tokenizer` (a name beside the prepared data, ssl_jax/data/text.py) turns
  `data.text_key` into `tokens` of `data.max_length`."""
  if data.get("host_resize"):
    return FitImage(data.host_resize)
  if data.get("tokenizer"):
    from ssl_jax.data import text  # pylint: disable=import-outside-toplevel
    return text.Tokenize(text.tokenizer_path(data.name, data.tokenizer, data.get("data_dir")),
                         data.max_length, data.get("text_key", "text"))
  return None

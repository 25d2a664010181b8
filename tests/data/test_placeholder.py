"""modality.placeholder_example: the record shapes training reads, decided from the data
config alone, against the real first record of every dataset the suite prepares."""
import pytest

from experiments import common
from ssl_jax.core.errors import ConfigError
from ssl_jax.data import modality, presets
from ssl_jax.training import engine


@pytest.mark.parametrize("dataset", ["fashion_mnist", "fashion_mnist_captions", "fortunes"])
def test_the_placeholder_has_the_real_records_keys_shapes_and_dtypes(dataset, tiny_data_dir):
  config = common.base_config("simclr", dataset)
  config.data.data_dir = tiny_data_dir
  if dataset == "fortunes":
    config.data.tokenizer = common.SMOKE_TOKENIZER[0]
  real = engine.example_batch(config)
  placeholder = modality.placeholder_example(config.data)
  assert {k: (v.shape, v.dtype) for k, v in placeholder.items()} == \
         {k: (v.shape, v.dtype) for k, v in real.items()}
  assert not any(v.any() for v in placeholder.values())


def test_host_resized_images_take_the_resize_side():
  data = presets.data_config("imagenet2012")
  assert modality.placeholder_example(data)["image"].shape == (1, data.host_resize,
                                                                 data.host_resize, 3)


def test_a_feature_whose_shape_the_config_does_not_give_is_refused():
  data = presets.data_config("fashion_mnist")
  with data.unlocked():
    data.features = ("image", "label", "bounding_box")
  with pytest.raises(ConfigError, match="'bounding_box'"):
    modality.placeholder_example(data)

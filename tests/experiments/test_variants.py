"""The experiments' named variants (the papers' flagship ViT and sequence-length runs): each
builds on its dataset, passes the whole check pass on the device count of a pod slice, and
is refused on any other dataset."""
import importlib

import pytest

from experiments import common
from ssl_jax import train
from ssl_jax.core import errors
from ssl_jax.data import presets
from test_experiments import MODULES

VARIANTS = [(name, variant) for name in MODULES
            for variant in getattr(importlib.import_module(f"experiments.{name}"), "VARIANTS", {})]
PAPER_DATASETS = ("imagenet2012", "wikipedia", "coco_captions")


def test_the_flagship_variants_exist():
  assert set(VARIANTS) >= {("dino", "vit_s16"), ("dino", "vit_b16"), ("moco", "vit_b16"),
                           ("simdino", "vit_b16"), ("mae", "vit_l16"), ("mlm", "seq512"),
                           ("clip", "vit_b16")}


@pytest.mark.parametrize("name, variant", VARIANTS)
def test_a_variant_passes_the_check_pass_on_its_dataset_only(name, variant):
  module = importlib.import_module(f"experiments.{name}")
  kind = presets.kind(common.contract_dataset(module))
  built = {}
  for dataset in [d for d in PAPER_DATASETS if presets.kind(d) == kind]:
    try:
      built[dataset] = module.get_config(f"{dataset},{variant}")
    except errors.ConfigError as error:
      assert "is a recipe for" in str(error)
  assert len(built) == 1, f"{name}:{variant} builds on {sorted(built)}"
  config = next(iter(built.values()))
  train.check(config, device_count=64)
  assert config.total_steps > 0 and config.global_batch_size % 64 == 0
  smoke = module.get_config(f"{next(iter(built))},{variant},smoke")
  assert smoke.total_steps == 3


def test_the_argument_names_dataset_variant_and_smoke():
  dino = importlib.import_module("experiments.dino")
  assert common.parse("imagenet2012,vit_s16,smoke", variants=dino.VARIANTS) == \
         ("imagenet2012", "vit_s16", True)
  assert common.parse("imagenet2012", variants=dino.VARIANTS) == ("imagenet2012", None, False)
  with pytest.raises(errors.ConfigError, match=r"VARIANT one of \['vit_b16', 'vit_s16'\]"):
    common.parse("imagenet2012,vit_h14", variants=dino.VARIANTS)
  with pytest.raises(errors.ConfigError, match="no variants"):
    common.parse_arg("imagenet2012,vit_s16")

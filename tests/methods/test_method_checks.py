"""Every method's check_config: the check pass (train.check) runs it before anything is
built, so it must pass each experiment's smoke config, refuse a bad value of the method's
own section and a bad view group with a one-line ConfigError naming the field, and do so
from the config alone (no network, no views, no tracing)."""
import importlib

import flax.linen as nn
import jax
import pytest

from experiments import common
from ssl_jax import methods, models
from ssl_jax.core import errors
from ssl_jax.data import augment, modality
from ssl_jax.methods.lib import views as views_lib

METHODS = methods.available()

# method: (field of config.<method>, a value the method refuses, words its message holds)
BAD_VALUES = {
    "barlow_twins": ("redundancy_weight", -1.0, "barlow_twins.redundancy_weight=-1.0"),
    "byol": ("base_momentum", 1.5, "byol.base_momentum=1.5"),
    "clip": ("init_temperature", 0.0, "clip.init_temperature=0.0"),
    "colorization": ("grid", 0, "colorization.grid=0"),
    "denoising": ("salt_pepper", 1.5, "denoising.salt_pepper=1.5"),
    "dino": ("teacher_temperature", 0.0, "dino.teacher_temperature=0.0"),
    "frame_order": ("tuple_length", 7, "frame_order.tuple_length=7"),
    "jigsaw": ("num_permutations", 0, "jigsaw.num_permutations=0"),
    "mae": ("mask_ratio", 1.0, "mae.mask_ratio=1.0"),
    "mlm": ("mask_rate", 0.0, "mlm.mask_rate=0.0"),
    "moco": ("temperature", 0.0, "moco.temperature=0.0"),
    "rotation": ("label_smoothing", 1.0, "rotation.label_smoothing=1.0"),
    "simclr": ("temperature", 0.0, "simclr.temperature=0.0"),
    "simdino": ("epsilon", 0.0, "simdino.epsilon=0.0"),
    "simsiam": ("projection_dim", 0, "simsiam.projection_dim=0"),
    "vicreg": ("eps", 0.0, "vicreg.eps=0.0"),
}
EXEMPT = {  # method: why its own section has no value to refuse
    "clm": "config.clm has no fields; its check is config.model.causal (test_clm_needs_a_causal_model)",
}


def smoke_config(name):
  experiment = importlib.import_module(f"experiments.{name}")
  return experiment.get_config(f"{common.contract_dataset(experiment)},smoke")


@pytest.fixture
def nothing_is_built(monkeypatch):
  """Building a network or views, initialising, applying or tracing anything fails the
  test: check_config must decide from the config alone."""
  def built(*args, **kwargs):
    raise AssertionError("check_config built or traced something")
  monkeypatch.setattr(models, "build", built)
  monkeypatch.setattr(views_lib, "make", built)
  monkeypatch.setattr(augment, "random_views", built)
  monkeypatch.setattr(augment, "random_view", built)
  monkeypatch.setattr(nn.Module, "init", built)
  monkeypatch.setattr(nn.Module, "apply", built)
  for name in ("jit", "eval_shape", "make_jaxpr", "vmap"):
    monkeypatch.setattr(jax, name, built)


def test_every_method_has_a_check_and_is_listed():
  assert set(BAD_VALUES) | set(EXEMPT) == set(METHODS)
  assert not set(BAD_VALUES) & set(EXEMPT)
  for name in METHODS:
    assert callable(getattr(methods.get(name), "check_config", None)), name


@pytest.mark.parametrize("name", METHODS)
def test_the_smoke_config_passes(name, nothing_is_built):
  methods.get(name).check_config(smoke_config(name))


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_of_its_section_is_refused(name, nothing_is_built):
  field, value, words = BAD_VALUES[name]
  config = smoke_config(name)
  config[name][field] = value
  with pytest.raises(errors.ConfigError) as raised:
    methods.get(name).check_config(config)
  message = str(raised.value)
  assert words in message and "\n" not in message


def image_methods():
  return [name for name in METHODS if smoke_config(name).views]


@pytest.mark.parametrize("name", image_methods())
def test_a_bad_view_value_is_refused_with_its_group(name, nothing_is_built):
  config = smoke_config(name)
  group = next(iter(config.views))
  config.views[group].flip_prob = 1.5
  with pytest.raises(errors.ConfigError, match=f"views.{group}.flip_prob must be a probability"):
    methods.get(name).check_config(config)


@pytest.mark.parametrize("name", image_methods())
def test_an_extra_view_group_is_refused(name, nothing_is_built):
  config = smoke_config(name)
  with config.views.unlocked():
    config.views.extra = views_lib.group(count=1, crop_size=8)
  with pytest.raises(errors.ConfigError):
    methods.get(name).check_config(config)


@pytest.mark.parametrize("name", image_methods())
def test_no_view_group_is_refused(name, nothing_is_built):
  config = smoke_config(name)
  with config.unlocked():
    config.views = type(config.views)()
  with pytest.raises(errors.ConfigError):
    methods.get(name).check_config(config)


VIEW_STRUCTURE = [  # (method, change to its smoke config, words of the message)
    ("simclr", lambda c: setattr(c.views.pair, "count", 1), "SimCLR needs exactly one view group"),
    ("simsiam", lambda c: setattr(c.views.pair, "count", 3), "SimSiam needs exactly one view group"),
    ("byol", lambda c: setattr(c.views.first, "count", 2), "BYOL needs two view groups of count 1"),
    ("byol", lambda c: setattr(c.views.first, "crop_size", 20), "the same crop_size"),
    ("moco", lambda c: setattr(c.views.first, "count", 2), "MoCo v3 needs two view groups"),
    ("moco", lambda c: setattr(c.views.first, "crop_size", 20), "the same crop_size"),
    ("moco", lambda c: setattr(c.moco, "queue_size", 2 * c.global_batch_size - 1),
     "is smaller than the 2 x 16 keys"),
    ("vicreg", lambda c: setattr(c.views.first, "crop_size", 20), "one crop size"),
    ("barlow_twins", lambda c: setattr(c.views.first, "count", 2), "Barlow Twins needs two views"),
    ("dino", lambda c: c.views.__delitem__("global_crops"), "config.views.global_crops"),
    ("dino", lambda c: setattr(c.views.global_crops, "count", 0), "views.global_crops.count=0"),
    ("simdino", lambda c: (setattr(c.views.global_crops, "count", 1),
                           c.views.__delitem__("local_crops")), "at least two crops"),
    ("mae", lambda c: setattr(c.views.crops, "count", 2), "MAE needs exactly one view group"),
    ("mae", lambda c: setattr(c.views.crops, "crop_size", 26), "views.crops.crop_size=26 is not a whole"),
    ("mae", lambda c: setattr(c.data, "image_size", 30), "data.image_size=30 is not a whole"),
    ("mae", lambda c: setattr(c.mae, "decoder_width", 18), "mae.decoder_width=18 must be divisible by 4"),
    ("mae", lambda c: setattr(c.mae, "decoder_heads", 3), "not divisible by mae.decoder_heads=3"),
    ("clip", lambda c: c.__delitem__("text_model"), "clip needs config.text_model"),
    ("colorization", lambda c: setattr(c.views.crops, "grayscale_prob", 0.5), "grayscale_prob must be 0"),
    ("colorization", lambda c: setattr(c.colorization, "grid", 3), "colorization.grid=3 must divide"),
    ("denoising", lambda c: setattr(c.views.crops, "count", 2), "denoising needs exactly one"),
    ("jigsaw", lambda c: setattr(c.jigsaw, "tile_gap", 9), "jigsaw.tile_gap=9 leaves no tile"),
    ("jigsaw", lambda c: setattr(c.jigsaw, "tile_gap", -1), "jigsaw.tile_gap=-1"),
    ("rotation", lambda c: setattr(c.views.crops, "count", 2), "rotation needs exactly one"),
    ("mlm", lambda c: setattr(c.mlm, "mask_token_fraction", 0.95), "exceeds 1"),
    ("mlm", lambda c: setattr(c.model, "causal", True), "bidirectional encoder"),
]


@pytest.mark.parametrize("name, change, words", VIEW_STRUCTURE,
                         ids=[f"{n}:{w[:24]}" for n, _, w in VIEW_STRUCTURE])
def test_structure_the_method_cannot_use_is_refused(name, change, words, nothing_is_built):
  config = smoke_config(name)
  with config.unlocked():
    change(config)
  with pytest.raises(errors.ConfigError) as raised:
    methods.get(name).check_config(config)
  assert words in str(raised.value)


def test_clm_needs_a_causal_model(nothing_is_built):
  config = smoke_config("clm")
  config.model.causal = False
  with pytest.raises(errors.ConfigError, match="clm needs a causal decoder"):
    methods.get("clm").check_config(config)


def test_a_local_crop_count_of_zero_is_no_multicrop(nothing_is_built):
  """--config.views.local_crops.count=0 drops the group (multicrop.make), so its settings
  are not checked either."""
  for name in ("dino", "simdino"):
    config = smoke_config(name)
    config.views.local_crops.count = 0
    config.views.local_crops.flip_prob = 1.5
    methods.get(name).check_config(config)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_the_lazy_path_raises_the_same_error(name):
  """A library user who skips the check pass gets the same message from the method's own
  functions (here: init, traced abstractly, or views when init does not read the field)."""
  field, value, words = BAD_VALUES[name]
  config = smoke_config(name)
  config[name][field] = value
  module = methods.get(name)
  with pytest.raises(errors.ConfigError) as expected:
    module.check_config(config)
  example = modality.placeholder_example(config.data)  # images, videos, tokens, labels
  with pytest.raises(errors.ConfigError) as lazy:
    jax.eval_shape(lambda rng: module.init(rng, config, example), jax.random.PRNGKey(0))
    jax.eval_shape(lambda batch, rng: module.views(batch, rng, 0, config),
                   {k: jax.numpy.zeros((2,) + v.shape[1:], v.dtype) for k, v in example.items()},
                   jax.random.PRNGKey(0))
  assert str(lazy.value) == str(expected.value)

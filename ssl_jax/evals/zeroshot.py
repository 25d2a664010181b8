"""Zero-shot classification (CLIP, Radford et al. 2021, section 3.1.2): no training.

Each class name is written into a prompt (`template`, e.g. "a photo of a {}."), tokenised
on the host with the run's tokenizer, and embedded by the method's `encode_text`; every
test image is embedded by `encode` (its "joint" features) and assigned the class whose
prompt embedding has the highest cosine similarity. Reported next to the same network
with random weights and chance (1 / classes); a linear probe of the same run
(`--mode linear`) is the supervised reference. Needs a method with `encode_text` and a
"joint" entry in `encode` (CLIP).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax.core import errors, validate
from ssl_jax.data import preprocess, sources, text
from ssl_jax.evals.lib import extraction

INPUT = "state"
SCORE = "top1"
FEATURES = "encode()['joint'] of the test images against encode_text() of the class prompts"
BASELINES = {"random_init": "same network, random weights (eval.random_init_seed)",
             "chance": "1 / number of classes"}


def default_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.template = "a photo of a {}."  # prompt for each class name
  config.class_names = ()               # empty: the dataset's label names, lower case
  return validate.strict_update(config, overrides, "eval.zeroshot")


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for the first invalid value of config.eval.zeroshot (whether the method
  has encode_text is checked by evaluate_state, which knows the method)."""
  template = config.template
  try:
    prompts = isinstance(template, str) and template.format("x") != template.format("y")
  except (IndexError, KeyError, ValueError):
    prompts = False
  if not prompts:
    raise errors.ConfigError(f"eval.zeroshot.template={template!r}; must be a string with one "
                             "'{}' where the class name goes, e.g. 'a photo of a {}.'")
  names = config.class_names
  if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
    raise errors.ConfigError(f"eval.zeroshot.class_names={names!r}; must be a tuple of class "
                             "names in label order, or () for the dataset's own")


def protocol(config: ml_collections.ConfigDict) -> dict:
  return {"classifier": "nearest class prompt by cosine similarity, no training",
          **{k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}}


def class_names(run_config, config) -> list[str]:
  if config.class_names:
    return list(config.class_names)
  data = run_config.data
  builder = sources.get_builder(data.name, data.data_dir)
  return [name.lower() for name in builder.info.features[data.label_key].names]


def prompt_tokens(run_config, config) -> np.ndarray:
  data = run_config.data
  tokenizer = text.load_tokenizer(text.tokenizer_path(data.name, data.tokenizer, data.data_dir))
  return np.stack([text.encode(tokenizer, config.template.format(name), data.max_length)
                   for name in class_names(run_config, config)])


def evaluate_state(states: dict, *, method, run_config, mesh, config, log=print) -> dict:
  """{"pretrained" | "random_init": {"top1"}, "chance": {"top1"}}."""
  check_config(config)
  if not callable(getattr(method, "encode_text", None)):
    raise errors.ConfigError(f"zeroshot needs a method with encode_text (CLIP); "
                               f"{run_config.method!r} has none")
  data = run_config.data
  prompts = jnp.asarray(prompt_tokens(run_config, config))
  source = sources.get_source(data.name, run_config.eval.test_split, data.data_dir)
  encode = jax.jit(lambda p, s, batch: method.encode(p, s, batch, run_config)["joint"])
  embed_text = jax.jit(lambda p, s, tokens: method.encode_text(p, s, tokens, run_config))
  results = {}
  for name, (params, method_state) in states.items():
    images, labels = extraction.extract(
        lambda batch: encode(params, method_state, batch), source, mesh,
        run_config.eval.batch_size, keys=tuple(data.features), label_key=data.label_key,
        preprocess=preprocess.from_config(data))
    classes = np.asarray(embed_text(params, method_state, prompts))
    predictions = np.argmax(images["features"] @ classes.T, axis=1)
    results[name] = {"top1": float(np.mean(predictions == labels))}
    log(f"  zeroshot on {name}: top1 {results[name]['top1']:.4f} ({len(classes)} prompts)")
  results["chance"] = {"top1": 1.0 / len(prompts)}
  return results

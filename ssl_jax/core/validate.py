"""Checks of numeric config values, so nonsense fails before training, by name."""
import ast
import difflib
import math
import numbers

import ml_collections

from ssl_jax.core.errors import ConfigError



def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
  """Raises ConfigError unless `value` is a finite number in the interval.

  The interval is [low, high] with `low_open` / `high_open` making either end open;
  a missing end is unbounded.
  """
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
      integer and not isinstance(value, numbers.Integral)):
    raise ConfigError(f"{name}={value!r}; must be {'an integer' if integer else 'a number'}")
  ok = math.isfinite(value)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if not ok:
    left = "unbounded" if low is None else f"{'(' if low_open else '['}{low:g}"
    right = "" if high is None else f"{high:g}{')' if high_open else ']'}"
    interval = f"{left}, {right or 'inf)'}" if low is not None else f"(-inf, {right})"
    raise ConfigError(f"{name}={value!r}; must be finite and in {interval}")


def strict_update(config, overrides: dict, section: str):
  """`config` with `overrides` applied, raising ConfigError for a field it does not define
  (with the closest valid names), then locked so that later assignments of unknown
  fields fail too."""
  for name in overrides:
    if name not in config:
      raise ConfigError(unknown_field_message(section, name, list(config.keys())))
  config.update(overrides)
  config.lock()
  return config


def unknown_field_message(section: str, name: str, valid: list[str]) -> str:
  close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
  hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
  where = f"config.{section}" if section else "config"
  return f"{where} has no field {name!r}; {hint}valid fields: {', '.join(sorted(valid))}"


def find_field(config: ml_collections.ConfigDict, path: str, section: str = ""):
  """(the ConfigDict holding the dotted field `path` of `config`, the field's name).
  ConfigError naming the first missing part and the closest valid names; `section` is
  where `config` sits in the whole config, for the message ("eval" for config.eval)."""
  *parents, name = path.strip().split(".")
  where = config
  for i, part in enumerate(parents + [name]):
    if not isinstance(where, ml_collections.ConfigDict) or part not in where:
      valid = list(where.keys()) if isinstance(where, ml_collections.ConfigDict) else []
      raise ConfigError(unknown_field_message(".".join(filter(None, [section, *parents[:i]])),
                                              part, valid))
    if i < len(parents):
      where = where[part]
  return where, name


def apply_overrides(config: ml_collections.ConfigDict, overrides, section: str = "") -> None:
  """"a.b=value" strings onto `config` (values as Python literals, else strings); a field
  it lacks is a ConfigError, as everywhere in the configs."""
  for override in overrides:
    path, sep, text = override.partition("=")
    if not sep:
      raise ConfigError(f"{override!r}: expected FIELD=VALUE, e.g. finetune.epochs=3")
    where, name = find_field(config, path, section)
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    if isinstance(where[name], tuple) and isinstance(value, list):
      value = tuple(value)
    with where.unlocked():
      where[name] = value

"""Checks of numeric config values, so nonsense fails before training, by name."""
import difflib
import math
import numbers


class ConfigError(ValueError):
  """A config value is invalid; the message names the field and what would work."""


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

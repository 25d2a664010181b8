"""Every error a user can act on, in one place.

Each is a `UserError`: the entrypoints (`core.log.fail_cleanly`) print its message as one
line, `error: ...`, and exit with status 1, with no traceback. A message names what was
wrong and the fix. Each class also derives from the built-in type a caller would expect
(`ValueError` for a bad value, `FileNotFoundError` for missing data), so code that
catches those keeps working. Errors that mean a bug in ssl_jax or in a method's code
stay ordinary exceptions, with their traceback.
"""


class UserError(Exception):
  """An error the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
  """A config value is invalid; the message names the field and what would work."""


class ConfigMismatchError(UserError, ValueError):
  """A resumed run's config differs from the one its workdir was started with, in fields
  that change what the run computes."""


class WorkdirError(UserError, OSError):
  """The workdir cannot be used: another run holds it, or it cannot be written."""


class RunNotFoundError(UserError, FileNotFoundError):
  """A workdir given to evaluate, export or plot holds no training run."""


class DataNotPreparedError(UserError, FileNotFoundError):
  """The dataset is not prepared in ArrayRecord format under data_dir."""


class TrainingDiverged(UserError, RuntimeError):
  """The loss, the gradient or the new state held a non-finite value."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint could not be written or restored."""


class NoGoodCheckpointError(CheckpointError):
  """Every step in the directory failed to restore or to verify."""


class StateMismatchError(CheckpointError):
  """The checkpoint holds a state of other shapes than this config builds."""


class NonFiniteFeaturesError(UserError, ValueError):
  """The checkpoint, or the features it gives, hold NaN or infinite values."""


class ExportError(UserError, ValueError):
  """The workdir's method cannot be exported, or a file is not an ssl_jax export."""

"""Training curves of a pretraining run, from its metrics.jsonl and eval/*.json.

    python -m ssl_jax.tools.plot --workdir W                 # writes W/curves.png
    python -m ssl_jax.tools.plot --workdir W --out run.png

Left: the loss against step, with the method's collapsed value (`collapsed_loss`) dashed
where the method logs one. Right: the in-loop monitor's top-1 (`config.eval.monitor`,
e.g. kNN) against step, and the final evaluation's numbers (eval/<mode>.json) at the
last step with their raw-input and random-init baselines as horizontal lines.

`overview` draws several runs side by side (the results table's figure).
"""
import io
import sys

from absl import app, flags

import matplotlib
matplotlib.use("Agg")  # files only: no display on a VM
from matplotlib import pyplot as plt  # pylint: disable=wrong-import-position

from ssl_jax.core import paths, rundir


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the records that hold a finite `key`."""
  steps, values = [], []
  for record in records:
    value = record.get(key)
    if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
      steps.append(record["step"])
      values.append(float(value))
  return steps, values


def monitor_key(config: dict) -> str:
  """The in-loop monitor's headline metric (`knn_top1` for the default kNN monitor)."""
  return f"{config.get('eval', {}).get('monitor', 'knn')}_top1"


def _title(config: dict, workdir: str) -> str:
  if config:
    return f"{config.get('method', '?')} on {config.get('data', {}).get('name', '?')}"
  return paths.absolute(workdir).rstrip("/").rsplit("/", 1)[-1]


def _draw_loss(axis, records, label=None, normalise=False):
  steps, losses = series(records, "loss")
  if normalise and losses:
    losses = [value / losses[0] for value in losses]
  line, = axis.plot(steps, losses, label=label or "loss")
  if not normalise:
    collapsed_steps, collapsed = series(records, "collapsed_loss")
    if collapsed:
      axis.plot(collapsed_steps, collapsed, "--", color="grey", label="collapsed value")
  axis.set_xlabel("step")
  axis.set_ylabel("loss / first logged loss" if normalise else "loss")
  return line


def _draw_scores(axis, records, evals, key, color=None, label=None, baselines=True):
  last_step = records[-1]["step"] if records else 0
  steps, values = series(records, key)
  if values:
    axis.plot(steps, values, "o-", color=color, label=label or f"monitor {key}")
  markers = {"linear": "s", "knn": "^"}
  scored = {mode: report for mode, report in evals.items() if "top1" in report}
  for index, (mode, report) in enumerate(scored.items()):  # the objective reports a loss
    # One run: a colour per mode, shared by its baselines. Several: a colour per run.
    mode_color = color or f"C{index + 1}"
    axis.plot([report.get("checkpoint_step", last_step)], [report["top1"]],
              markers.get(mode, "D"), color=mode_color, markersize=8,
              label=None if label else f"final {mode}")
    if baselines:
      for name, style in (("raw_input", ":"), ("random_init", "-.")):
        if name in report.get("baselines", {}):
          axis.axhline(report["baselines"][name], linestyle=style, linewidth=1,
                       color="black" if color else mode_color, label=f"{name} ({mode})")
  axis.set_xlim(0, max(last_step, axis.get_xlim()[1] / 1.05 if label else 0, 1) * 1.05)
  axis.set_xlabel("step")
  axis.set_ylabel("top-1 accuracy")


def plot_run(workdir: str, out: str | None = None) -> str:
  """Draws one run's curves; returns the PNG's path (default W/curves.png)."""
  records = [r for r in rundir.read_metrics(workdir) if "step" in r]
  evals, config = rundir.read_evals(workdir), (rundir.read_config(workdir) or {})
  figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  _draw_loss(left, records)
  left.legend(fontsize=8)
  left.set_title("pretraining loss")
  _draw_scores(right, records, evals, monitor_key(config))
  right.legend(fontsize=7, loc="lower right")
  right.set_title("evaluation top-1")
  figure.suptitle(_title(config, workdir))
  figure.tight_layout()
  out = out or paths.join(workdir, "curves.png")
  _save(figure, out)
  return out


def plot_overview(workdirs: dict, out: str) -> str:
  """Several runs on one figure: {label: workdir} -> PNG at `out`.

  Losses of different methods live on different scales, so each is divided by its first
  logged value; the baselines drawn are those of the first run that has them (all runs of
  the results table share the dataset, splits and backbone).
  """
  figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
  drew_baselines = False
  for label, workdir in workdirs.items():
    records = [r for r in rundir.read_metrics(workdir) if "step" in r]
    evals = rundir.read_evals(workdir)
    line = _draw_loss(left, records, label=label, normalise=True)
    _draw_scores(right, records, evals, monitor_key((rundir.read_config(workdir) or {})),
                 color=line.get_color(), label=label,
                 baselines=not drew_baselines and bool(evals))
    drew_baselines = drew_baselines or bool(evals)
  left.legend(fontsize=8)
  left.set_title("pretraining loss (relative)")
  handles, labels = right.get_legend_handles_labels()
  unique = dict(zip(labels, handles))
  right.legend(unique.values(), unique.keys(), fontsize=7, loc="center left",
               bbox_to_anchor=(1.0, 0.5))
  right.set_title("monitor (lines); final linear (squares), kNN (triangles)")
  figure.tight_layout()
  _save(figure, out)
  return out


def _save(figure, out: str) -> None:
  """Writes the PNG to a local path or a URL (gs://...)."""
  buffer = io.BytesIO()
  figure.savefig(buffer, dpi=100, format="png")
  plt.close(figure)
  paths.write_bytes(out, buffer.getvalue())


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  try:
    path = plot_run(flags.FLAGS.workdir, flags.FLAGS.out)
  except FileNotFoundError as error:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(1) from None
  print(f"wrote {path}")


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Workdir of a pretraining run (holds metrics.jsonl).")
  flags.DEFINE_string("out", None, "PNG to write; default WORKDIR/curves.png.")
  app.run(main)

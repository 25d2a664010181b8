"""The README's results table: every image method pretrained and evaluated on Fashion-MNIST.

    python -m experiments.table                     # all rows, then README + docs/figures
    python -m experiments.table --methods simclr,dino --root /tmp/ssl_table
    python -m experiments.table --smoke --root /tmp/t --readme= --figures=/tmp/t/fig

The rows are discovered, not listed: every module of the experiments package with a
`get_config` whose default config (what `python3 -m experiments.METHOD` runs, no
--dataset) trains on `fashion_mnist` and evaluates with both `linear` and `knn` in
`config.eval.modes`, in alphabetical order. A new method's experiment module with a
Fashion-MNIST default is a row with no edit here; text, image-text and colour-only
experiments (mlm, clm, clip, colorization) default to other datasets and are not.

Each row is one experiment module run exactly as its row's command says
(`python3 -m experiments.METHOD --workdir ROOT/METHOD`, its Fashion-MNIST config: ResNet-18
at width 0.25, batch 256, steps sized to the budget below), pretraining and then its
linear and kNN evaluation. A row whose workdir is already trained and evaluated is not
run again, so an interrupted table resumes where it stopped (a half-trained row resumes
from its checkpoint). Minutes are measured around each row's processes on this machine and
kept in ROOT/METHOD/table_row.json.

A row whose experiment module sets `TABLE_FINETUNE = True` (MAE: fine-tuning is its
paper's protocol) is also fine-tuned end to end, next to the same network trained from
random weights by the same recipe, on FINETUNE_SPLIT (10% of the train labels, the
low-shot protocol) for FINETUNE_EPOCHS epochs: two ~10-minute trainings here, where the
full labels would take hours. Both are scored once on test; the "fine-tuned / scratch"
column shows them (`eval/finetune.json`), made by `python3 -m ssl_jax.evaluate --workdir
ROOT/METHOD --mode finetune --eval finetune.epochs=5 --eval 'train_split=train[:10%]'`.

Teacher-student methods score two networks; a row's linear and kNN columns are the one
their official code evaluates (DINO, SimDINO: the EMA teacher; BYOL, MoCo: the online
network), the "second network" column the other.

The table states its noise: the row of NOISE_METHOD (the README demo's method) is run
again at seeds 1 .. --noise_seeds-1 (`--config.seed=S`, workdirs ROOT/METHOD_seedS, resumed
like the rows), and a line under the table gives each probe's mean over the seeds and its
spread (largest minus smallest). A gap between two rows, or between a row and a baseline,
smaller than that spread is not resolved.

Then: a PNG of each run's curves (ssl_jax.tools.plot) and one overview in --figures, and the
markdown table between the README's `<!-- results-table:start -->` and
`<!-- results-table:end -->` markers. What each row's numbers mean, and the discussion of
them, is hand-written in docs/results.md: update it when the numbers move.
"""
import argparse
import functools
import importlib
import json
import os
import pkgutil
import platform
import statistics
import subprocess
import sys
import time

from ssl_jax.core import rundir
from ssl_jax.tools import plot

START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "fashion_mnist"  # every row's, so that one raw-pixel baseline row serves them all
MODES = ("linear", "knn")  # the two probes each row reports
NOT_ROWS = ("common", "table")  # the experiments package's helpers (recipes has no get_config)
DISCUSSION = "docs/results.md"  # the hand-written discussion of the rows
NOISE_METHOD = "vicreg"  # the README demo's method: its row is rerun at other seeds
FINETUNE_SPLIT = "train[:10%]"  # the labels a TABLE_FINETUNE row is fine-tuned on
FINETUNE_EPOCHS = 5


def is_row(config) -> bool:
  """An experiment's default config is a results-table row: it pretrains on Fashion-MNIST
  and is scored by the linear and kNN probes."""
  modes = set(config.eval.modes.split(","))
  return config.data.get("name") == DATASET and set(MODES) <= modes


@functools.cache
def methods() -> tuple[str, ...]:
  """The table's rows, alphabetical: the experiment modules whose default config (the one
  their row command runs) `is_row`. Imported on first use, not when this module is."""
  import experiments  # pylint: disable=import-outside-toplevel
  rows = []
  for info in pkgutil.iter_modules(experiments.__path__):
    if info.name in NOT_ROWS:
      continue
    module = importlib.import_module(f"experiments.{info.name}")
    get_config = getattr(module, "get_config", None)
    if get_config is not None and is_row(get_config(None)):
      rows.append(info.name)
  return tuple(sorted(rows))


def finetunes(method: str) -> bool:
  """The row's experiment asks the table to fine-tune it too (`TABLE_FINETUNE = True`)."""
  return bool(getattr(importlib.import_module(f"experiments.{method}"), "TABLE_FINETUNE", False))


def finetune_overrides(smoke: bool) -> list[str]:
  """`ssl_jax.evaluate --eval` overrides of the table's fine-tune protocol; a smoke table
  keeps its smoke config's (a few hundred images, 2 epochs)."""
  if smoke:
    return []
  return ["--eval", f"finetune.epochs={FINETUNE_EPOCHS}", "--eval", f"train_split={FINETUNE_SPLIT}"]


def finetune_command(workdir: str, smoke: bool = False) -> list[str]:
  return ["-m", "ssl_jax.evaluate", "--workdir", workdir, "--mode", "finetune",
          *finetune_overrides(smoke)]


def is_finetuned(workdir: str, smoke: bool = False) -> bool:
  """eval/finetune.json scores the final checkpoint with the table's protocol (a report
  from another split or epoch count, e.g. a full-label fine-tune, does not count)."""
  if not is_evaluated(workdir, ("finetune",)):
    return False
  protocol = rundir.read_evals(workdir)["finetune"]["protocol"]
  return smoke or (protocol["train_split"] == FINETUNE_SPLIT
                   and protocol["epochs"] == FINETUNE_EPOCHS)


def row_command(method: str, workdir: str) -> str:
  return f"python3 -m experiments.{method} --workdir {workdir}"


def _read_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_trained(workdir: str) -> bool:
  """The run reached its total_steps (its last metrics record is the final step)."""
  config = rundir.read_config(workdir)
  if not config or not rundir.has_metrics(workdir):
    return False
  steps = [r["step"] for r in rundir.read_metrics(workdir) if "loss" in r]
  return bool(steps) and steps[-1] == config["total_steps"]


def is_evaluated(workdir: str, modes=("linear", "knn")) -> bool:
  """Every mode's report exists and scores the final checkpoint."""
  config = rundir.read_config(workdir)
  reports = rundir.read_evals(workdir)
  return bool(config) and all(
      mode in reports and reports[mode]["checkpoint_step"] == config["total_steps"]
      for mode in modes)


def _run(command: list[str], what: str) -> float:
  """Runs one row's process with its output streamed; returns its minutes."""
  print(f"[table] {what}: {' '.join(command)}", flush=True)
  start = time.time()
  result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), check=False)
  if result.returncode != 0:
    raise SystemExit(f"[table] {what} failed with exit status {result.returncode}; "
                     "rerun the table to resume from the last checkpoint")
  return (time.time() - start) / 60


def _write_json(path: str, value) -> None:
  with open(path, "w") as f:
    json.dump(value, f, indent=2)


def run_row(method: str, workdir: str, extra: list[str], finetune: bool = False) -> dict:
  """Pretrains and evaluates one row unless already done (and fine-tunes it, with
  `finetune`); returns its table_row.json."""
  record_path = os.path.join(workdir, "table_row.json")
  record = _read_json(record_path) or {"pretrain_minutes": None, "eval_minutes": None}
  if not is_trained(workdir):
    # Pretraining alone first, so that its minutes are measured apart from evaluation.
    minutes = _run([sys.executable, "-m", f"experiments.{method}", "--workdir", workdir,
                    "--config.eval.modes=none", *extra], f"{method}: pretraining")
    record["pretrain_minutes"] = (record["pretrain_minutes"] or 0.0) + minutes  # over attempts
    record["cpu"] = platform.processor() or platform.machine()
    record["cores"] = os.cpu_count()
    record["date"] = time.strftime("%Y-%m-%d")
    os.makedirs(workdir, exist_ok=True)
    _write_json(record_path, record)
    if not is_trained(workdir):
      raise SystemExit(f"[table] {method}: pretraining stopped before its last step; "
                       "rerun the table to resume it")
  if not is_evaluated(workdir):
    record["eval_minutes"] = _run([sys.executable, "-m", "ssl_jax.evaluate", "--workdir",
                                   workdir, "--mode", "linear,knn"], f"{method}: evaluation")
    _write_json(record_path, record)
  else:
    print(f"[table] {method}: already trained and evaluated in {workdir}; skipped", flush=True)
  smoke = "--smoke" in extra
  if finetune and not is_finetuned(workdir, smoke):
    record["finetune_minutes"] = _run([sys.executable, *finetune_command(workdir, smoke)],
                                      f"{method}: fine-tuning and training from scratch")
    _write_json(record_path, record)
  return record


def _percent(value) -> str:
  return "–" if value is None else f"{100 * value:.2f}%"


def _minutes(value) -> str:
  return "–" if value is None else f"{value:.1f}"


def views_label(view_groups: dict) -> str:
  """'2x24, 4x12': each view group's count x crop size; a group switched off (count 0,
  e.g. DINO without local crops) is no view of the row."""
  return ", ".join(f"{g['count']}x{g['crop_size']}" for g in view_groups.values() if g["count"])


def row_summary(method: str, workdir: str, record: dict) -> dict:
  """The numbers of one row, read back from the run's own files."""
  config = rundir.read_config(workdir)
  reports = rundir.read_evals(workdir)
  linear, knn = reports["linear"], reports["knn"]
  speeds = [r.get("examples_per_second", r.get("images_per_second"))  # older runs: images_
            for r in rundir.read_metrics(workdir)]
  speeds = [s for s in speeds if s]
  return {
      "method": method, "steps": config["total_steps"],
      "batch": config["global_batch_size"],
      "views": views_label(config["views"]),
      "linear": linear["top1"], "knn": knn["top1"],
      "knn_k": knn["protocol"]["reported_k"],
      "random_linear": linear["baselines"]["random_init"],
      "random_knn": knn["baselines"]["random_init"],
      "raw_linear": linear["baselines"]["raw_input"], "raw_knn": knn["baselines"]["raw_input"],
      "images_per_s": statistics.median(speeds) if speeds else None,
      "pretrain_minutes": record.get("pretrain_minutes"),
      "eval_minutes": record.get("eval_minutes"),
      "finetune_minutes": record.get("finetune_minutes"),
      "command": row_command(method, workdir),
      "second": _second_network(linear, knn),
      "finetune": _finetune(reports.get("finetune")),
  }


def _finetune(report: dict | None) -> tuple[float, float, str] | None:
  """(fine-tuned top-1, from-scratch top-1, train split) of a row's finetune report."""
  if not report:
    return None
  return report["top1"], report["baselines"]["random_init"], report["protocol"]["train_split"]


def _second_network(linear: dict, knn: dict) -> tuple[str, float, float] | None:
  """(name, linear top-1, kNN top-1) of the network a row does not report first (the
  `pretrained/NAME` entry of its reports), or None for a one-network method."""
  names = [k.split("/", 1)[1] for k in linear.get("details", {}) if k.startswith("pretrained/")]
  if not names:
    return None
  name = names[0]
  return name, linear["details"][f"pretrained/{name}"]["top1"], knn["details"][f"pretrained/{name}"]["top1"]


def noise_summary(method: str, summaries: list[dict]) -> dict:
  """Mean and spread (max - min) of each probe over one row's runs at several seeds."""
  out = {"method": method, "seeds": len(summaries)}
  for probe in ("linear", "knn"):
    values = [s[probe] for s in summaries]
    out[probe] = {"mean": statistics.fmean(values), "spread": max(values) - min(values),
                  "values": values}
  return out


def noise_line(noise: dict) -> str:
  parts = [f"{probe} {100 * noise[probe]['mean']:.2f}% (spread {100 * noise[probe]['spread']:.2f})"
           for probe in ("linear", "knn")]
  return (f"Noise: {noise['method']} at {noise['seeds']} seeds (its row's command with "
          f"`--config.seed=S`, S = 0 .. {noise['seeds'] - 1}): {', '.join(parts)}; a gap "
          "smaller than a probe's spread is not resolved.")


def markdown(rows: list[dict], noise: dict | None = None) -> str:
  """The results table: one row per method, then the raw-pixel baseline, then the noise
  line when one was measured."""
  k = rows[0]["knn_k"]
  lines = [
      f"| method | views | steps | linear top-1 | kNN top-1 (k={k}) "
      "| second network linear / kNN | fine-tuned / scratch (labels, minutes) "
      "| random-init linear / kNN | pretrain min | eval min | images/s | command |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in rows:
    speed = "–" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
    second = ("–" if not r.get("second") else
              f"{r['second'][0]}: {_percent(r['second'][1])} / {_percent(r['second'][2])}")
    tuned = ("–" if not r.get("finetune") else
             f"{_percent(r['finetune'][0])} / {_percent(r['finetune'][1])} ({r['finetune'][2]}, "
             f"{_minutes(r.get('finetune_minutes'))} min)")
    lines.append(
        f"| {r['method']} | {r['views']} | {r['steps']} | **{_percent(r['linear'])}** "
        f"| {_percent(r['knn'])} | {second} | {tuned} "
        f"| {_percent(r['random_linear'])} / {_percent(r['random_knn'])} "
        f"| {_minutes(r['pretrain_minutes'])} | {_minutes(r['eval_minutes'])} | {speed} "
        f"| `{r['command']}` |")
  raw = rows[0]
  lines.append(f"| raw pixels (784-d) | – | – | {_percent(raw['raw_linear'])} "
               f"| {_percent(raw['raw_knn'])} | – | – | – | – | – | – | (every row's baseline) |")
  if noise:
    lines += ["", noise_line(noise)]
  return "\n".join(lines)


def replace_section(path: str, start: str, end: str, body: str) -> None:
  """Replaces the text between a page's `start` and `end` markers with `body` (generated
  tables live between such markers: the README's results, docs/scale.md)."""
  with open(path) as f:
    text = f.read()
  if start not in text or end not in text:
    raise SystemExit(f"{path} has no {start} ... {end} section to replace")
  head, rest = text.split(start, 1)
  _, tail = rest.split(end, 1)
  with open(path, "w") as f:
    f.write(f"{head}{start}\n{body}\n{end}{tail}")


def write_readme(path: str, table: str, overview: str) -> None:
  """Replaces the text between the README's markers with the table and its figure."""
  figure = os.path.relpath(overview, os.path.dirname(os.path.abspath(path)))
  replace_section(path, START, END,
                  f"{table}\n\n![loss and top-1 against step, every method]({figure})")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", default="/tmp/ssl_table", help="one workdir per method under it")
  parser.add_argument("--methods", default="",
                      help="comma-separated rows (default: every discovered row, i.e. each "
                      "experiment whose default config trains on fashion_mnist and is "
                      "scored by linear and kNN)")
  parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"),
                      help="README to update between its markers; empty: print only")
  parser.add_argument("--figures", default=os.path.join(ROOT, "docs", "figures"),
                      help="where the per-run PNGs and overview.png go")
  parser.add_argument("--smoke", action="store_true",
                      help="every row in its experiment's smoke mode (seconds, not minutes)")
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir for every row")
  parser.add_argument("--noise_seeds", type=int, default=3,
                      help=f"run the {NOISE_METHOD} row at this many seeds (the row itself is "
                      "seed 0) and state the spread under the table; 1: no noise line")
  args = parser.parse_args(argv)
  available = methods()
  chosen = [m for m in args.methods.split(",") if m] or list(available)
  unknown = [m for m in chosen if m not in available]
  if unknown:
    parser.error(f"--methods {args.methods!r}: {','.join(unknown)} is not a row; "
                 f"expected some of {','.join(available)}")
  extra = (["--smoke"] if args.smoke else []) + (
      [f"--config.data.data_dir={args.data_dir}"] if args.data_dir else [])

  if args.noise_seeds < 1:
    parser.error(f"--noise_seeds {args.noise_seeds}: expected 1 or more")

  start = time.time()
  rows = []
  for method in chosen:
    workdir = os.path.join(args.root, method)
    record = run_row(method, workdir, extra, finetune=finetunes(method))
    rows.append(row_summary(method, workdir, record))
  noise = None
  if args.noise_seeds > 1 and NOISE_METHOD in chosen:
    runs = [next(r for r in rows if r["method"] == NOISE_METHOD)]
    for seed in range(1, args.noise_seeds):
      workdir = os.path.join(args.root, f"{NOISE_METHOD}_seed{seed}")
      record = run_row(NOISE_METHOD, workdir, [*extra, f"--config.seed={seed}"])
      runs.append(row_summary(NOISE_METHOD, workdir, record))
    noise = noise_summary(NOISE_METHOD, runs)
  os.makedirs(args.figures, exist_ok=True)
  for method in chosen:
    path = plot.plot_run(os.path.join(args.root, method),
                         os.path.join(args.figures, f"{method}.png"))
    print(f"[table] wrote {path}")
  overview = plot.plot_overview({m: os.path.join(args.root, m) for m in chosen},
                                os.path.join(args.figures, "overview.png"))
  print(f"[table] wrote {overview}")
  table = markdown(rows, noise)
  print(table)
  if args.readme:
    write_readme(args.readme, table, overview)
    print(f"[table] updated {args.readme}; the discussion of these rows is in "
          f"{DISCUSSION}: update it if the numbers moved")
  print(f"[table] wall time {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
  main()

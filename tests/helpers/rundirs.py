"""Test-side handling of run workdirs."""
import json
import pathlib
import shutil


def rewound_copy(workdir, destination, step: int) -> pathlib.Path:
  """A copy of a finished run's workdir as it stood when its step-`step` checkpoint was
  written: later checkpoints and metrics records removed, no eval/ or tensorboard/. Training
  in it resumes from that checkpoint, as a run stopped there would."""
  destination = pathlib.Path(destination)
  shutil.copytree(workdir, destination, ignore=shutil.ignore_patterns("eval", "tensorboard"))
  checkpoints = destination / "checkpoints"
  later = [p for p in checkpoints.iterdir() if p.name.isdigit() and int(p.name) > step]
  assert later and (checkpoints / str(step)).is_dir(), sorted(p.name for p in checkpoints.iterdir())
  for path in later:
    shutil.rmtree(path)
  metrics = (destination / "metrics.jsonl").read_text().splitlines(keepends=True)
  (destination / "metrics.jsonl").write_text(
      "".join(line for line in metrics if json.loads(line).get("step", 0) <= step))
  return destination

"""`python -m ssl_jax.tools.plot` on a run directory written by hand: every kind of report
the evaluators write, including the held-out objective's (a loss, no top-1)."""
import json

import pytest

from ssl_jax.tools import plot


@pytest.fixture
def text_run(tmp_path):
  """A language-model run's files: loss records, a linear probe and the objective."""
  (tmp_path / "config.json").write_text(json.dumps({"method": "mlm", "total_steps": 4,
                                                    "eval": {"monitor": "knn"}}))
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps({"step": s, "loss": 7.0 - s}) + "\n" for s in range(1, 5)))
  (tmp_path / "eval").mkdir()
  (tmp_path / "eval" / "linear.json").write_text(json.dumps(
      {"mode": "linear", "top1": 0.31, "checkpoint_step": 4,
       "baselines": {"random_init": 0.25, "raw_input": 0.37}}))
  (tmp_path / "eval" / "objective.json").write_text(json.dumps(
      {"mode": "objective", "loss": 6.67, "checkpoint_step": 4,
       "baselines": {"random_init": 9.0}}))
  return tmp_path


def test_a_run_with_an_objective_report_plots(text_run):
  out = plot.plot_run(str(text_run))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  overview = plot.plot_overview({"mlm": str(text_run)}, str(text_run / "overview.png"))
  with open(overview, "rb") as f:
    assert f.read(4) == b"\x89PNG"

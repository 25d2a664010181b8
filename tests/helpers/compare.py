"""Comparing two computations in tests so that the comparison holds on any CPU.

Two computations of the same step (8 devices and 1, FSDP and replicated, two processes
and one) add the same float32 terms in other orders, and how far that moves a result
depends on the CPU's kernels (AVX2, AVX-512, AMX round differently) and on how close the
test batch sits to a kink of the network (a ReLU at zero, a max). So a comparison here:

1. compares **one step from a shared state**, never several: an optimizer such as LARS
   amplifies a step's rounding about 30x every two steps;
2. **measures** the reference's own rounding sensitivity at that state (the same step
   with its inputs moved by about one float32 rounding) and holds each leaf to 2e-5 of
   its scale plus 10x what that probe moved it: a wrong gather, a per-device statistic
   or a per-shard update moves a leaf by 1e-3 to O(1) of its scale;
3. refuses to judge where the probe moves a leaf by more than 1e-3 of its scale (the
   gradient is discontinuous there): the worker then takes the next init seed, so the
   test runs at a state where the gradient is smooth;
4. has a fault-injected twin that must fail: the same comparison applied to the step
   computed wrongly on purpose.

Runs stopped and resumed on the same program are compared bitwise instead: XLA:CPU is
deterministic for one program on one machine.
"""
import jax
import numpy as np

# A probe moving a leaf by more than this fraction of its scale: the function is not
# smooth at the test state, and no tolerance can tell rounding from a fault there.
DISCONTINUOUS = 1e-3
# A worker looks for an init seed whose probe moves no leaf by more than this.
SMOOTH = 1e-4
# Rounding of a smooth step, as a fraction of a leaf's scale, before the measured part.
BASE_TOLERANCE = 2e-5
# Leaves whose gradient is zero in exact arithmetic, so they hold rounding noise only:
# an attention key bias (softmax ignores a shift common to every key's score). AdamW
# moves such a leaf by up to a learning rate in a random direction in any computation.
ZERO_GRADIENT_LEAVES = ("['key']['bias']",)


def relative_gap(got, want) -> float:
  """Largest difference of a leaf as a fraction of its scale, floored at 1e-2 of the
  largest leaf: a leaf whose gradient is zero in exact arithmetic (attention's key
  bias) holds only rounding, which is no measure of agreement."""
  got, want = [[np.asarray(x, np.float64) for x in jax.tree.leaves(t)] for t in (got, want)]
  floor = 1e-2 * max(np.abs(w).max() for w in want)
  return max(float(np.abs(g - w).max() / max(np.abs(w).max(), floor)) for g, w in zip(got, want))


def leaf_group(name: str) -> str:
  """The part of a flattened leaf name before its first dict key: `.params`,
  `.opt_state[0].mu`, `grads`. Leaves of one group share a floor for their scale."""
  return name.split("['")[0]


def scales(values: dict) -> dict:
  """{name: the leaf's largest magnitude, floored at 1e-2 of its group's largest}: a leaf
  that is zero in exact arithmetic (a bias a BatchNorm cancels) holds rounding only."""
  largest = {}
  for name, value in values.items():
    group = leaf_group(name)
    largest[group] = max(largest.get(group, 0.0), float(np.abs(value).max(initial=0.0)))
  return {name: max(float(np.abs(value).max(initial=0.0)), 1e-2 * largest[leaf_group(name)])
          + 1e-30 for name, value in values.items()}


def sensitivities(want: dict, probes: list[dict]) -> dict:
  """{name: the largest change any probe made to the leaf, as a fraction of its scale}."""
  scale = scales(want)
  return {name: max((float(np.abs(probe[name] - want[name]).max(initial=0.0)) / scale[name]
                     for probe in probes), default=0.0) for name in want}


def gaps(got: dict, want: dict, probes: list[dict], extra: dict | None = None) -> dict:
  """{name: (gap, tolerance, sensitivity)} of each leaf of `want` as fractions of its
  scale: the difference between the two computations, and what rounding may account for
  (BASE_TOLERANCE + 10x the larger of the probes' change and `extra`'s, another measured
  rounding source per leaf)."""
  assert set(got) == set(want), sorted(set(got) ^ set(want))
  scale, sensitivity = scales(want), sensitivities(want, probes)
  extra = extra or {}
  return {name: (float(np.abs(np.asarray(got[name], np.float64) - want[name]).max(initial=0.0))
                 / scale[name],
                 BASE_TOLERANCE + 10 * max(sensitivity[name], extra.get(name, 0.0)),
                 sensitivity[name])
          for name in want}


def failures(leaf_gaps: dict) -> list[str]:
  """Leaves whose gap exceeds their tolerance, worst first, each with its numbers."""
  bad = sorted(((gap / tolerance, name, gap, tolerance) for name, (gap, tolerance, _)
                in leaf_gaps.items() if gap > tolerance), reverse=True)
  return [f"{name}: off by {gap:.2e} of its scale, tolerance {tolerance:.2e}"
          for _, name, gap, tolerance in bad]


def parameters_excluded(name: str) -> bool:
  """For a step's changes: parameters are stored in float32, so a parameter near 1 (a
  LayerNorm scale) moves in steps of 1.2e-7, which for a change of 2.5e-4 is 4.8e-4 of
  it; a probe that moves the parameter by one ulp measures that quantisation, not a kink.
  The optimizer and method state hold the gradient at full float32 resolution and judge
  smoothness; parameters are still held to their own measured sensitivity."""
  return not name.startswith(".params")


def assert_smooth(leaf_gaps: dict, judged=lambda name: True) -> None:
  rough = {name: s for name, (_, _, s) in leaf_gaps.items() if s >= DISCONTINUOUS and judged(name)}
  assert not rough, ("the reference is not smooth at the test state (a one-rounding change "
                     f"of its inputs moves these leaves by more than {DISCONTINUOUS:g} of "
                     f"their scale): {rough}")


def assert_close(got: dict, want: dict, probes: list[dict], extra: dict | None = None,
                 judged=lambda name: True) -> None:
  """Each leaf of `got` within rounding of `want` (see the module docstring); `judged`
  names the leaves whose sensitivity decides whether the state is smooth enough to judge."""
  leaf_gaps = gaps(got, want, probes, extra)
  assert_smooth(leaf_gaps, judged)
  bad = failures(leaf_gaps)
  assert not bad, "\n".join(bad[:10])


def assert_fault_seen(got: dict, want: dict, probes: list[dict], margin: float = 10.0) -> None:
  """A computation made wrong on purpose fails `assert_close`, and not narrowly: some
  leaf is off by `margin` times its tolerance."""
  leaf_gaps = gaps(got, want, probes)
  worst = max(gap / tolerance for gap, tolerance, _ in leaf_gaps.values())
  assert worst > margin, f"the fault moved no leaf past {margin}x its tolerance ({worst:.2f}x)"


def float_changes(new: dict, old: dict) -> dict:
  """{name: new - old in float64} of the floating-point leaves: what one step did."""
  return {name: np.asarray(new[name], np.float64) - np.asarray(old[name], np.float64)
          for name in new if np.issubdtype(np.asarray(new[name]).dtype, np.floating)}


def assert_same_step(got: dict, want: dict) -> None:
  """tests/helpers/train_worker.py `one_step` results (views, loss, gradients, new method_state)
  agree. `want` carries its probes: `perturbed_grads...` (the largest change of each
  gradient leaf when the views move by 1e-7 of themselves) and, where present,
  `reordered_grads...` (the examples in reverse order: the same terms summed in another
  order, a rounding source no probe of the function shows)."""
  compared = lambda result: {k for k in result if not k.startswith(("perturbed_", "reordered_"))}
  assert compared(got) == compared(want)
  # Augmentation is keyed per example, so the views agree up to float rounding.
  for name in [k for k in want if k.startswith("views")]:
    np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
  # atol for losses near 0 (SimSiam's mean cosine), where rtol alone judges cancellation.
  np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6, atol=1e-6)
  leaf_gaps = step_gaps(got, want)
  assert_smooth(leaf_gaps)
  bad = failures(leaf_gaps)
  assert not bad, "\n".join(bad[:10])
  # Batch statistics, where the network has them, moved away from their init (mean 0,
  # var 1): they are global ones, and were compared above.
  means = [k for k in leaf_gaps if "batch_stats" in k and k.endswith("['mean']")]
  assert not means or max(np.abs(want[k]).max() for k in means) > 1e-3


def step_gaps(got: dict, want: dict) -> dict:
  """`gaps` of the gradient and method_state leaves of two `one_step` results, with
  `want`'s probes (see assert_same_step)."""
  names = [k for k in want if k.startswith(("grads", "method_state"))]
  assert any(k.startswith("grads") for k in names)
  reference = {k: np.asarray(want[k], np.float64) for k in names}
  probe = {k: want.get("perturbed_" + k, want[k]) for k in names}
  reordered = {k: want["reordered_" + k] for k in names if "reordered_" + k in want}
  extra = sensitivities({k: reference[k] for k in reordered}, [reordered]) if reordered else {}
  if any(value >= DISCONTINUOUS for value in extra.values()):
    # Reversing the examples changed the function itself, not only the order of its
    # sums: randomness drawn by position (dropout masks) moved with them. Not a
    # measure of rounding, so it must not widen the tolerance.
    extra = {}
  return gaps({k: got[k] for k in names}, reference, [probe], extra)

"""The collapse warning: the loss at the method's collapsed value for 3 consecutive logs."""
import math

import jax.numpy as jnp
import numpy as np

from ssl_jax.methods.lib import losses
from ssl_jax.train import CollapseWatch


def test_warns_once_after_three_logs_at_the_collapsed_value():
  lines = []
  watch = CollapseWatch(lines.append)
  collapsed = math.log(511)
  for step, loss in enumerate([6.0, collapsed, collapsed * 1.001, 5.0, collapsed, collapsed,
                               collapsed * 0.999, collapsed, collapsed]):
    watch.observe(step, {"loss": loss, "collapsed_loss": collapsed})
  assert len(lines) == 1 and "at step 6" in lines[0]
  quiet = CollapseWatch(lines.append)
  for step in range(5):
    quiet.observe(step, {"loss": 0.0})  # no collapsed_loss reported: nothing to compare
  assert len(lines) == 1


def test_nt_xent_of_identical_embeddings_is_its_collapsed_value():
  # Every anchor scores all 2N - 1 other rows alike: the value SimCLR reports.
  z = jnp.asarray(np.ones((16, 4), np.float32))
  loss, _ = losses.nt_xent(z, 0.1)
  np.testing.assert_allclose(float(loss), math.log(15), rtol=1e-6)

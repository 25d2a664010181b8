"""A test-only method on vectors, outside the package (config.method = "toy_vector_method"):
two noisy copies of every vector through an MLP, NT-Xent between them. Its method_state
counts the steps `update` has seen, so the trainer's handling of method_state (passing,
checkpointing, resuming) is exercised too."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssl_jax.core import validate
from ssl_jax.methods.lib import losses


def default_config(**overrides):
  config = ml_collections.ConfigDict()
  config.hidden_dim = 32        # encoder width: the evaluated features
  config.projection_dim = 8     # NT-Xent space
  config.noise = 0.5            # std of the gaussian noise of each view
  config.temperature = 0.2
  return validate.strict_update(config, overrides, "toy")


class Network(nn.Module):
  hidden_dim: int
  projection_dim: int

  @nn.compact
  def __call__(self, x):
    features = nn.relu(nn.Dense(self.hidden_dim, name="encoder")(x))
    return features, nn.Dense(self.projection_dim, name="projector")(features)


def _network(config):
  return Network(config.toy.hidden_dim, config.toy.projection_dim)


def init(rng, config, example_batch):
  params = _network(config).init(rng, example_batch["vector"][:1])["params"]
  return params, {"updates_seen": jnp.zeros((), jnp.int32)}


def views(batch, rng, step, config):
  vectors = batch["vector"]
  noise = jax.random.normal(rng, (2, *vectors.shape)) * config.toy.noise
  return jnp.concatenate([vectors + noise[0], vectors + noise[1]])


def loss(params, method_state, views, rng, step, config, train=True):
  _, projections = _network(config).apply({"params": params}, views)
  value, top1 = losses.nt_xent(projections, config.toy.temperature)
  return value, ({"contrastive_top1": top1}, method_state)


def update(params, method_state, step, config):
  seen = method_state["updates_seen"] + 1
  return {"updates_seen": seen}, {"updates_seen": seen, "step_seen": step}


def encode(params, method_state, batch, config):
  return _network(config).apply({"params": params}, batch["vector"])[0]

"""Small MLP heads that sit on top of a backbone (projectors, predictors)."""

from typing import Sequence

import flax.linen as nn


class MLPHead(nn.Module):
  """(Linear -> BN -> ReLU) per hidden layer, then Linear to output_dim.

  SimCLR's projector on a ResNet-18 is MLPHead((2048,), 128); BYOL's predictor is
  MLPHead((4096,), 256). Hidden linears have no bias when followed by BN (BN's beta
  plays that role). last_bn adds an affine-free BN after the output linear, as in
  SimCLR v2 / MoCo v3 projectors.
  """
  hidden_dims: Sequence[int]
  output_dim: int
  use_bn: bool = True
  last_bn: bool = False
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool):
    for i, dim in enumerate(self.hidden_dims):
      x = nn.Dense(dim, use_bias=not self.use_bn, name=f"hidden{i + 1}")(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, name=f"hidden{i + 1}_bn")(x)
      x = nn.relu(x)
    x = nn.Dense(self.output_dim, use_bias=not self.last_bn, name="output")(x)
    if self.last_bn:
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=1e-5, use_scale=False, use_bias=False,
                       name="output_bn")(x)
    return x


class BackboneWithHead(nn.Module):
  """A backbone, then a head on its features: returns (features, head(features)).

  SimCLR's network (head: the projector), and the online and target encoders of BYOL and
  MoCo (the part their momentum targets copy).
  """
  backbone: nn.Module
  head: nn.Module

  def __call__(self, images, train: bool = True):
    features = self.backbone(images, train=train)
    return features, self.head(features, train=train)

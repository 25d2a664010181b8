"""Fine-tuning (`--mode finetune`): layer-wise lr decay and freezing by hand, and whole
runs from a ResNet checkpoint, from its exported file (the same numbers) and from MAE's
ViT, each next to the supervised-from-scratch baseline."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from ssl_jax import evals, evaluate, export, models
from ssl_jax.core import errors
from ssl_jax.evals import finetune
from ssl_jax.evals.lib import monitor as monitor_lib
from ssl_jax.models import resnet, vit


def vit_params(depth=2):
  model = models.build(vit.default_config("Ti", 4, width=8, depth=depth, num_heads=2))
  backbone = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)["params"]
  return model, {"backbone": backbone, "head": {"kernel": jnp.zeros((8, 3)), "bias": jnp.zeros((3,))}}


def scale_of(scales, *path):
  node = scales
  for key in path:
    node = node[key]
  return node


def test_layer_wise_decay_and_freezing_by_hand():
  model, params = vit_params(depth=2)  # layers: embeddings 0, block0 1, block1 2, norm + head 3
  config = finetune.default_config(layer_decay=0.5)
  scales = finetune.lr_scales(params, model, config)
  assert scale_of(scales, "backbone", "patch_embed", "kernel") == 0.125
  assert scale_of(scales, "backbone", "class_token") == 0.125
  assert scale_of(scales, "backbone", "encoder", "block0", "mlp_in", "kernel") == 0.25
  assert scale_of(scales, "backbone", "encoder", "block1", "norm1", "scale") == 0.5
  assert scale_of(scales, "backbone", "encoder", "norm", "bias") == 1.0
  assert scale_of(scales, "head", "kernel") == 1.0
  frozen = finetune.lr_scales(params, model, finetune.default_config(layer_decay=0.5, frozen_blocks=1))
  assert scale_of(frozen, "backbone", "patch_embed", "kernel") == 0.0
  assert scale_of(frozen, "backbone", "encoder", "block0", "mlp_in", "kernel") == 0.0
  assert scale_of(frozen, "backbone", "encoder", "block1", "mlp_in", "kernel") == 0.5
  head_only = finetune.lr_scales(params, model, finetune.default_config(frozen_blocks=-1))
  assert {s for p, s in jax.tree_util.tree_leaves_with_path(head_only["backbone"])} == {0.0}
  assert scale_of(head_only, "head", "bias") == 1.0

  network = models.build(resnet.default_config(10, width_multiplier=1 / 16))
  backbone = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)["params"]
  scales = finetune.lr_scales({"backbone": backbone, "head": {}}, network,
                              finetune.default_config(layer_decay=0.5))
  assert scale_of(scales, "backbone", "stem_conv", "kernel") == 0.5 ** 5
  assert scale_of(scales, "backbone", "stage1_block1", "conv1", "kernel") == 0.5 ** 4
  assert scale_of(scales, "backbone", "stage4_block1", "bn2", "scale") == 0.5


def test_one_adamw_step_is_scaled_per_layer_and_spares_tokens():
  model, params = vit_params(depth=1)
  params = jax.tree.map(lambda p: p + 1.0, params)
  config = finetune.default_config(learning_rate=0.1, batch_size=256, layer_decay=0.5,
                                   weight_decay=0.01, warmup_epochs=0)
  tx = finetune.optimizer(params, model, config, steps=10, warmup=0)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # First AdamW step: m/sqrt(v) = g/|g| = 1 (eps aside), so update = -lr * s * (1 + wd * p).
  kernel = scale_of(updates, "backbone", "patch_embed", "kernel")  # layer 0 of 2: s = 0.25
  np.testing.assert_allclose(kernel, -0.1 * 0.25 * (1 + 0.01 * 1.0 * np.asarray(
      scale_of(params, "backbone", "patch_embed", "kernel"))), rtol=1e-5)
  token = scale_of(updates, "backbone", "class_token")  # no weight decay
  np.testing.assert_allclose(token, -0.1 * 0.25, rtol=1e-5)
  bias = scale_of(updates, "head", "bias")  # s = 1, no decay on a bias
  np.testing.assert_allclose(bias, -0.1, rtol=1e-5)


def test_bad_settings_and_the_monitor_refuses_weight_evaluators():
  with pytest.raises(errors.ConfigError, match="eval.finetune.layer_decay"):
    finetune.check_config(finetune.default_config(layer_decay=1.5))
  with pytest.raises(errors.ConfigError, match="eval.finetune.frozen_blocks"):
    finetune.check_config(finetune.default_config(frozen_blocks=-2))
  from experiments import simclr
  config = simclr.get_config("fashion_mnist,smoke")
  config.eval.monitor = "finetune"
  with pytest.raises(errors.ConfigError, match="the monitor runs feature evaluators"):
    monitor_lib.Monitor(config, None, None)


def _copy(workdir, tmp_path, name):
  target = tmp_path / name
  shutil.copytree(workdir, target)
  shutil.rmtree(target / "eval", ignore_errors=True)
  return str(target)


def _check(report, epochs):
  details = report["details"]
  assert set(details) == {"pretrained", "random_init"} and set(report["baselines"]) == {"random_init"}
  for result in details.values():
    assert 0.0 <= result["top1"] <= 1.0 and len(result["holdout_by_epoch"]) == epochs
    assert result["best_epoch"] == 1 + int(np.argmax(result["holdout_by_epoch"]))
    assert result["holdout_top1"] == max(result["holdout_by_epoch"])
  protocol = report["protocol"]
  assert protocol["mode"] == "finetune" and "held-out" in protocol["selection"]
  assert "supervised from scratch" in protocol["baselines"]["random_init"]


def test_finetune_a_resnet_checkpoint_and_its_export_alike(smoke_run, tmp_path, capsys):
  workdir, result = smoke_run("simclr")
  assert result.returncode == 0, result.stderr[-3000:]
  run = _copy(workdir, tmp_path, "simclr")
  report = evaluate.run(run, ["finetune"])["finetune"]
  epochs = evals.load_run_config(run).eval.finetune.epochs
  _check(report, epochs)
  assert json.load(open(f"{run}/eval/finetune.json")) == json.loads(json.dumps(report))
  assert "finetune" in capsys.readouterr().out  # the printed table, raw_input shown as "-"

  out = str(tmp_path / "simclr.safetensors")
  export.export(run, out)
  from_file = evaluate.run(run, ["finetune"], init=out)["finetune"]
  assert out in from_file["protocol"]["features"]
  # Same weights, same seed and data order: the same fine-tuning, number for number.
  timeless = lambda r: {name: {k: v for k, v in result.items() if k != "minutes"}
                        for name, result in r["details"].items()}
  assert timeless(from_file) == timeless(report)
  with pytest.raises(errors.ConfigError, match="--init is read by weight evaluators only"):
    evaluate.run(run, ["finetune", "knn"], init=out)


def test_finetune_mae_vit(smoke_run, tmp_path):
  workdir, result = smoke_run("mae")
  assert result.returncode == 0, result.stderr[-3000:]
  run = _copy(workdir, tmp_path, "mae")
  report = evaluate.run(run, ["finetune"])["finetune"]
  _check(report, evals.load_run_config(run).eval.finetune.epochs)
  assert report["protocol"]["drop_path_rate"] == 0.1


@pytest.mark.smoke_methods("mlm")
def test_finetune_a_text_encoder_and_its_layers(smoke_run, tmp_path):
  """An MLM Transformer fine-tuned on the fortune categories (token ids, no crops); its
  embeddings are layer 0, its blocks 1..depth, the head depth + 1."""
  workdir, result = smoke_run("mlm")
  assert result.returncode == 0, result.stderr[-3000:]
  run = _copy(workdir, tmp_path, "mlm")
  report = evaluate.run(run, ["finetune"])["finetune"]
  _check(report, evals.load_run_config(run).eval.finetune.epochs)
  from ssl_jax.models import transformer
  config = evals.load_run_config(run)
  model = models.build(config.model)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32), train=False)["params"]
  scales = finetune.lr_scales({"backbone": params, "head": {"kernel": jnp.zeros(1)}}, model,
                              finetune.default_config(layer_decay=0.5))
  depth = model.depth
  assert scales["head"]["kernel"] == 1.0
  assert scales["backbone"]["token_embed"]["embedding"] == 0.5 ** (depth + 1)
  assert scales["backbone"][f"block{depth - 1}"]["mlp_in"]["kernel"] == 0.5
  assert transformer.num_layers(model) == depth + 1

"""Evaluation: kNN and the linear probe against independent references, and the
evaluate entrypoint on a tiny pretraining run."""
import json
import os

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from conftest import reference_subset
from ssl_jax import evals, evaluate, train
from ssl_jax.core import errors, validate
from ssl_jax.evals import knn, linear
from train_worker import tiny_config


def numpy_weighted_knn(bank, bank_labels, queries, k, temperature, num_classes):
  """InstDisc/DINO weighted kNN, written directly: cosine similarity, top-k, exp(s/T) votes."""
  bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  predictions = []
  for q in queries:
    sims = bank @ q
    nearest = np.argsort(-sims, kind="stable")[:k]
    votes = np.zeros(num_classes)
    for i in nearest:
      votes[bank_labels[i]] += np.exp(sims[i] / temperature)
    predictions.append(np.argmax(votes))
  return np.array(predictions)


def test_knn_matches_numpy():
  rng = np.random.default_rng(0)
  bank = rng.standard_normal((300, 16)).astype(np.float32)
  labels = rng.integers(0, 5, 300)
  queries = rng.standard_normal((50, 16)).astype(np.float32)
  predictions = knn.knn_predict(bank, labels, queries, num_classes=5, ks=(1, 20), temperature=0.07,
                                chunk_size=16)
  for k in (1, 20):
    np.testing.assert_array_equal(predictions[k],
                                  numpy_weighted_knn(bank, labels, queries, k, 0.07, 5))


def test_knn_rejects_k_larger_than_bank():
  with pytest.raises(errors.ConfigError, match=r"eval.knn.ks=\(20,\): each k must be in \[1, 10\].*--config.eval.knn.ks"):
    knn.knn_predict(np.ones((10, 2)), np.zeros(10, int), np.ones((3, 2)), num_classes=2, ks=(20,))


def test_linear_probe_matches_sklearn_logistic_regression():
  x, y = load_digits(return_X_y=True)
  order = np.random.default_rng(0).permutation(len(x))
  train_idx, test_idx = order[:1400], order[1400:]
  result = linear.linear_probe(x[train_idx], y[train_idx], x[test_idx], y[test_idx], num_classes=10,
                               config=linear.default_config(epochs=40, batch_size=128))
  mean, std = x[train_idx].mean(0), x[train_idx].std(0)
  std[std < 1e-6] = 1
  reference = LogisticRegression(max_iter=5000).fit((x[train_idx] - mean) / std, y[train_idx])
  sklearn_top1 = reference.score((x[test_idx] - mean) / std, y[test_idx])
  assert abs(result["top1"] - sklearn_top1) < 0.02, (result, sklearn_top1)
  assert result["learning_rate"] in linear.default_config().learning_rates


def test_linear_probe_flags_a_choice_at_the_grid_edge():
  x, y = load_digits(return_X_y=True)
  def probe(learning_rates):
    config = linear.default_config(epochs=2, batch_size=256, learning_rates=learning_rates,
                                   weight_decays=(0.0,))
    return linear.linear_probe(x[:1000], y[:1000], x[1000:], y[1000:], num_classes=10,
                               config=config)
  # Two epochs: far too few steps for 1e-6 to learn anything, so the top of the grid wins.
  tiny_rates = probe((1e-6, 1e-5, 1e-1))
  assert tiny_rates["learning_rate"] == 1e-1 and tiny_rates["lr_at_grid_edge"]
  assert not probe((1e-2,))["lr_at_grid_edge"]


def test_evaluate_tiny_run(tiny_data_dir, tmp_path):
  config = tiny_config(tiny_data_dir, total_steps=2)
  config.eval.monitor_every_steps = 2
  config.eval.monitor_train_split = "train"
  config.eval.monitor_test_split = "test"
  workdir = str(tmp_path / "run")
  train.train(config, workdir)
  monitor_lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if "knn" in l]
  assert monitor_lines and 0 <= monitor_lines[-1]["knn_top1"] <= 1

  reports = evaluate.run(workdir, ["linear", "knn"])
  for mode in ("linear", "knn"):
    with open(os.path.join(workdir, "eval", f"{mode}.json")) as f:
      saved = json.load(f)
    assert saved["mode"] == mode and saved["checkpoint_step"] == 2
    protocol = saved["protocol"]
    assert protocol["mode"] == mode and protocol["checkpoint_step"] == 2
    assert protocol["train_split"] == "train" and protocol["test_split"] == "test"
    assert "simclr.encode" in protocol["features"]
    if mode == "knn":
      assert protocol["ks"] == [20, 200] and protocol["temperature"] == 0.07
    else:
      assert protocol["learning_rates"] == list(config.eval.linear.learning_rates)
    assert set(saved["baselines"]) == {"random_init", "raw_input"}
    assert saved == json.loads(json.dumps(reports[mode]))
    for value in (saved["top1"], *saved["baselines"].values()):
      assert 0.0 <= value <= 1.0

  # The raw-pixel kNN baseline, recomputed from the IDX files with numpy.
  (train_images, train_labels), (test_images, test_labels) = (reference_subset("train"),
                                                              reference_subset("test"))
  pixels = lambda images: ((images.reshape(len(images), -1) / 255.0 - 0.2860) / 0.3530)
  predictions = numpy_weighted_knn(pixels(train_images), train_labels, pixels(test_images), 20, 0.07, 10)
  expected = float(np.mean(predictions == test_labels))
  assert reports["knn"]["baselines"]["raw_input"] == pytest.approx(expected, abs=1 / 256 + 1e-9)
  # On real images the raw-pixel kNN is far above chance (10%).
  assert expected > 0.5

  # A step that was never saved is named as such (not "damaged"), with the steps there are.
  with pytest.raises(errors.CheckpointError, match=r"no checkpoint step 7 in .*steps are \[2\]"):
    evaluate.run(workdir, ["knn"], step=7)
  # Scores that could not be written are refused before any is computed.
  os.rename(os.path.join(workdir, "eval"), os.path.join(workdir, "eval.done"))
  open(os.path.join(workdir, "eval"), "w").close()  # eval/ cannot be made (even as root)
  with pytest.raises(errors.WorkdirError, match="cannot write the scores to"):
    evaluate.run(workdir, ["knn"])


def test_evaluation_restores_params_and_method_state_only(tiny_data_dir, tmp_path):
  """Evaluation never reads the optimizer state: with config.json's optimizer switched to
  one whose state has another shape, a full train-state restore fails, while evaluation
  yields exactly the same features from exactly the trained params."""
  import jax
  from ssl_jax.core import parallel
  from ssl_jax.training import checkpoint, engine
  workdir = str(tmp_path / "run")
  state = train.train(tiny_config(tiny_data_dir, total_steps=2), workdir)
  trained = parallel.to_host(state.params)
  config = evals.load_run_config(workdir)
  mesh = parallel.make_mesh()
  before, step = evaluate.feature_sets(workdir, config, mesh)
  assert step == 2

  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["optimizer"]["name"] == "lars"
  saved["optimizer"]["name"] = "adamw"
  json.dump(saved, open(os.path.join(workdir, "config.json"), "w"))
  changed = evals.load_run_config(workdir)
  _, init, _ = engine.build(changed, mesh)
  checkpoints = checkpoint.Checkpointer(workdir, async_save=False)
  with pytest.raises(errors.StateMismatchError):
    checkpoints.restore(engine.abstract_state(init, jax.random.PRNGKey(0)))
  method = evaluate.methods.get(changed.method)
  fields = checkpoints.restore_fields(engine.abstract_model_fields(
      method, changed, mesh, engine.example_batch(changed)))
  checkpoints.close()
  assert set(fields) == {"step", "params", "method_state"}
  for got, want in zip(jax.tree.leaves(parallel.to_host(fields["params"])),
                       jax.tree.leaves(trained)):
    np.testing.assert_array_equal(got, want)
  # The random-init baseline's weights are those a training run would start from.
  rng = jax.random.PRNGKey(changed.eval.random_init_seed)
  started = parallel.to_host(init(rng).params)
  built = parallel.to_host(
      jax.jit(engine.model_init(method, changed, engine.example_batch(changed)))(rng)[0])
  for got, want in zip(jax.tree.leaves(built), jax.tree.leaves(started)):
    np.testing.assert_array_equal(got, want)
  after, _ = evaluate.feature_sets(workdir, changed, mesh)
  for name in ("pretrained", "random_init", "raw_input"):
    for split in ("train", "test"):
      (features_before, labels_before), (features_after, labels_after) = (
          before[name][split], after[name][split])
      np.testing.assert_array_equal(labels_after, labels_before)
      for key in features_before:
        np.testing.assert_array_equal(features_after[key], features_before[key])


def test_eval_overrides_are_strict_literals():
  section = evals.default_config()
  validate.apply_overrides(section, ["finetune.epochs=3", "train_split=train[:10%]",
                                     "finetune.crop_scale=[0.5, 1.0]", "knn.ks=(5,)"], "eval")
  assert section.finetune.epochs == 3 and section.train_split == "train[:10%]"
  assert section.finetune.crop_scale == (0.5, 1.0) and section.knn.ks == (5,)
  with pytest.raises(errors.ConfigError, match="did you mean 'epochs'"):
    validate.apply_overrides(section, ["finetune.epoch=3"], "eval")
  with pytest.raises(errors.ConfigError, match="FIELD=VALUE"):
    validate.apply_overrides(section, ["finetune.epochs"], "eval")


def test_rows_with_the_same_backbone_share_one_random_init_baseline(tiny_data_dir):
  """The random-init baseline is the backbone at seed eval.random_init_seed, whatever the
  method: SimCLR's and BYOL's smoke runs (the same ResNet) get the same random features;
  a method that feeds its backbone another input (colorization) keeps its own."""
  import importlib
  from ssl_jax import methods
  from ssl_jax.core import parallel
  from ssl_jax.evals.lib import weights
  mesh = parallel.make_mesh()
  images = reference_subset("test")[0][:8, :, :, None]
  features = {}
  for name in ("simclr", "byol"):
    config = importlib.import_module(f"experiments.{name}").get_config("fashion_mnist,smoke")
    config.data.data_dir = tiny_data_dir
    method = methods.get(name)
    assert weights.shares_random_backbone(method, config)
    encode = evaluate.random_encoder(method, config, mesh, None, None)
    features[name] = np.asarray(encode({"image": images}))
  assert config.eval.random_init_seed == evals.default_config().random_init_seed
  np.testing.assert_array_equal(features["simclr"], features["byol"])
  assert features["simclr"].std() > 0
  colour = importlib.import_module("experiments.colorization").get_config("photo_crops,smoke")
  assert not weights.shares_random_backbone(methods.get("colorization"), colour)

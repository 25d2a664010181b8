"""Your own data in one command (data/own.py, `python -m ssl_jax.data.prepare NAME --from_*`):
real photographs (scikit-learn's samples, cut into tiles of several sizes) in class folders,
an unlabelled folder, a CSV list and text, each read back through the loader's own source
and checked against what was written (labels from the folder names, the documented hash
split, the pixel statistics recomputed in float64 from the stored records)."""
import csv
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from ssl_jax.core import errors
from ssl_jax.data import own, prepare, sources


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
  from sklearn.datasets import load_sample_images
  root = tmp_path_factory.mktemp("photos")
  for name, image in zip(["china", "flower"], load_sample_images().images):
    (root / name).mkdir()
    for i in range(24):
      y, x, extra = (i // 6) * 50, (i % 6) * 50, (i % 3) * 10  # 40x40, 40x50, 40x60 tiles
      Image.fromarray(image[y:y + 40, x:x + 40 + extra]).save(root / name / f"{i:02d}.png")
  return root


def _prepare_unlabelled(photo_folder, tmp_path, data_dir):
  """`my_unlabelled`: eight square tiles directly in one folder (no class subfolders)."""
  unlabelled = tmp_path / "unlabelled"
  unlabelled.mkdir()
  for i in range(0, 24, 3):
    (unlabelled / f"{i}.png").write_bytes((photo_folder / "china" / f"{i:02d}.png").read_bytes())
  prepare.main(["my_unlabelled", "--from_images", str(unlabelled), "--data_dir", data_dir,
                "--test_fraction", "0.4"])


def _records(name, data_dir, split):
  source = sources.get_source(name, split, data_dir)
  return [source[i] for i in range(len(source))]


def test_an_image_folder_becomes_a_labelled_dataset_with_its_own_statistics(photo_folder,
                                                                             tmp_path, capsys):
  data_dir = str(tmp_path / "tfds")
  assert prepare.main(["my_photos", "--from_images", str(photo_folder), "--data_dir", data_dir,
                       "--test_fraction", "0.25"]) == 0
  assert "32 of 48 images are resized" in capsys.readouterr().out  # the 40x50 and 40x60 ones
  metadata = own.read_metadata("my_photos", data_dir)
  assert metadata["image_size"] == 40 and metadata["channels"] == 3
  assert metadata["classes"] == ["china", "flower"]
  expected_test = sorted(f"{c}/{i:02d}.png" for c in ("china", "flower") for i in range(24)
                         if zlib.crc32(f"{c}/{i:02d}.png".encode()) < 0.25 * 2**32)
  train, test = _records("my_photos", data_dir, "train"), _records("my_photos", data_dir, "test")
  assert len(test) == len(expected_test) and len(train) + len(test) == 48
  assert metadata["splits"] == {"train": len(train), "test": len(test)}
  # Records keep the folder order within a split: labels follow the class folders.
  expected_train = sorted(set(f"{c}/{i:02d}.png" for c in ("china", "flower")
                              for i in range(24)) - set(expected_test))
  assert [r["label"] for r in train] == [0 if p.startswith("china") else 1 for p in expected_train]
  # A square tile is stored exactly as it was saved.
  first_square = next(k for k, p in enumerate(expected_train) if int(p[-6:-4]) % 3 == 0)
  saved = np.asarray(Image.open(photo_folder / expected_train[first_square]))
  np.testing.assert_array_equal(np.frombuffer(train[first_square]["image"], np.uint8)
                                .reshape(40, 40, 3) if isinstance(train[first_square]["image"], bytes)
                                else train[first_square]["image"], saved)
  pixels = np.stack([np.asarray(r["image"]) for r in train]).astype(np.float64) / 255
  np.testing.assert_allclose(metadata["mean"], pixels.mean(axis=(0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(metadata["std"], pixels.std(axis=(0, 1, 2)), atol=1e-5)


def test_a_csv_and_a_parquet_list_and_an_unlabelled_folder(photo_folder, tmp_path):
  data_dir = str(tmp_path / "tfds")
  table = tmp_path / "list.csv"
  with open(table, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "kind"])
    for i in range(0, 24, 3):  # the square tiles only: no resizing
      writer.writerow([os.path.relpath(photo_folder / "flower" / f"{i:02d}.png", tmp_path), "b"])
      writer.writerow([os.path.relpath(photo_folder / "china" / f"{i:02d}.png", tmp_path), "a"])
  prepare.main(["my_list", "--from_table", str(table), "--path_column", "file",
                "--label_column", "kind", "--data_dir", data_dir, "--test_fraction", "0.3"])
  metadata = own.read_metadata("my_list", data_dir)
  assert metadata["classes"] == ["a", "b"] and metadata["label_key"] == "label"
  records = _records("my_list", data_dir, "train") + _records("my_list", data_dir, "test")
  assert sorted(r["label"] for r in records) == [0] * 8 + [1] * 8

  from pyarrow import csv as arrow_csv, parquet  # the same list as Parquet
  parquet.write_table(arrow_csv.read_csv(table), tmp_path / "list.parquet")
  prepare.main(["my_parquet", "--from_table", str(tmp_path / "list.parquet"), "--path_column",
                "file", "--label_column", "kind", "--data_dir", data_dir, "--test_fraction", "0.3"])
  assert own.read_metadata("my_parquet", data_dir)["splits"] == metadata["splits"]

  _prepare_unlabelled(photo_folder, tmp_path, data_dir)
  metadata = own.read_metadata("my_unlabelled", data_dir)
  assert metadata["label_key"] == "" and metadata["classes"] == []
  assert set(_records("my_unlabelled", data_dir, "train")[0]) == {"image"}


def test_text_from_a_file_and_from_class_folders(tmp_path):
  data_dir = str(tmp_path / "tfds")
  notes = tmp_path / "notes.txt"
  notes.write_text("\n\n".join(f"note {i}\nsecond line" for i in range(40)) + "\n\n\n")
  prepare.main(["my_notes", "--from_text", str(notes), "--data_dir", data_dir])
  texts = [r["text"] for split in ("train", "test") for r in _records("my_notes", data_dir, split)]
  assert sorted(t.decode() if isinstance(t, bytes) else t for t in texts) == sorted(
      f"note {i}\nsecond line" for i in range(40))
  folder = tmp_path / "letters"
  for label, count in (("bills", 6), ("friends", 9)):
    (folder / label).mkdir(parents=True)
    for i in range(count):
      (folder / label / f"{i}.txt").write_text(f"{label} letter {i}")
  prepare.main(["my_letters", "--from_text", str(folder), "--data_dir", data_dir,
                "--test_fraction", "0.3"])
  records = [r for split in ("train", "test") for r in _records("my_letters", data_dir, split)]
  for record in records:
    text = record["text"].decode() if isinstance(record["text"], bytes) else record["text"]
    assert text.startswith(("bills", "friends")[record["label"]])


def test_a_run_takes_the_datasets_values_and_checks_labels_before_writing(photo_folder,
                                                                           tmp_path):
  from experiments import simclr
  from ssl_jax import train
  data_dir = str(tmp_path / "tfds")
  _prepare_unlabelled(photo_folder, tmp_path, data_dir)
  config = simclr.get_config("fashion_mnist")
  config.data.name, config.data.data_dir = "my_unlabelled", data_dir
  warnings = []
  own.apply_metadata(config.data, data_dir, warn=warnings.append)
  assert config.data.image_size == 40 and len(config.data.mean) == 3
  assert config.data.features == ("image",) and config.data.label_key == ""
  assert any("data.image_size is 28 in the config but 40" in w for w in warnings), warnings
  config = simclr.get_config("fashion_mnist")
  config.data.name, config.data.data_dir = "my_unlabelled", data_dir
  with pytest.raises(errors.ConfigError, match="has no labels .*--config.eval.modes=objective"):
    train.train(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--from_images", "/nonexistent"], "not a folder"),
    (["--from_text", "/nonexistent"], "no such file or folder"),
    (["--from_images", "{photos}", "--test_fraction", "1.5"], "must lie in"),
])
def test_bad_sources_are_one_line(arguments, message, photo_folder, tmp_path, capsys):
  arguments = [a.format(photos=photo_folder) for a in arguments]
  with pytest.raises(SystemExit) as exit_:
    prepare.main(["mine", *arguments, "--data_dir", str(tmp_path)])
  assert exit_.value.code == 1
  assert message in capsys.readouterr().err

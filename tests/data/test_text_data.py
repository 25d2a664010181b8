"""Text data: the fortune corpus parsed from hand-made files and built as a TFDS dataset,
the WordPiece tokenizer (fixed special ids, round trip on the real corpus), and tokens
from the loader's host preprocess."""
import pickle
import zlib

import numpy as np
import pytest

from ssl_jax.data import pipeline, prepare, sources, text

# Two categories' files as Debian writes them: '%' lines between entries, an empty entry,
from ssl_jax.data.builders import fortunes
# CRLF endings, teletype overstrikes (underlined and bold), a bell, and a duplicate.
ANIMALS = ("The cat sat.\n%\nA _\bd_\bo_\bg barks\nloudly.   \n%\n%\nB\bBold\x07 bird.\n%\n"
           "Shared text\n  across  files.\n%\n")
WISDOM = ("Look before you ___\b\b\bleap.\r\n%\r\nShared text across\nfiles.\n%\nTest entry 1.\n%\n"
          "Last one, no % after.")


@pytest.fixture
def corpus_dir(tmp_path, monkeypatch):
  directory = tmp_path / "fortunes"
  directory.mkdir()
  (directory / "wisdom").write_text(WISDOM)
  (directory / "animals").write_text(ANIMALS)
  (directory / "animals.dat").write_bytes(b"\x00\x02binary index")
  (directory / "animals.u8").symlink_to(directory / "animals")
  monkeypatch.setenv(fortunes.SOURCE_DIR_ENV, str(directory))
  return directory


def test_entries_separators_and_overstrike_cleaning():
  assert fortunes.parse(ANIMALS) == ["The cat sat.", "A dog barks\nloudly.", "Bold bird.",
                                     "Shared text\n  across  files."]
  assert fortunes.parse(WISDOM) == ["Look before you leap.", "Shared text across\nfiles.",
                                    "Test entry 1.", "Last one, no % after."]
  assert fortunes.resolve_overstrike("X\b_ and _\bY") == "X and Y"  # the letter, either order


def test_categories_duplicates_and_disjoint_splits(corpus_dir):
  names, splits = fortunes.load()
  assert names == ["animals", "wisdom"]  # the .dat index and the .u8 link are not categories
  records = splits["train"] + splits["test"]
  texts = [t for t, _ in records]
  # The duplicate (same words, other spacing) is kept once, with its first file's category.
  assert len(texts) == 7 and sum("Shared" in t for t in texts) == 1
  assert [t for t, _ in splits["test"]] == ["Test entry 1."]  # its CRC32 is 0 mod 10 (zlib)
  assert dict(records)["Shared text\n  across  files."] == 0
  assert dict(records)["Last one, no % after."] == 1
  for split, items in splits.items():
    for t, _ in items:  # the split is a function of the text alone
      in_test = zlib.crc32(" ".join(t.split()).encode()) % 10 == 0
      assert in_test == (split == "test")


def test_built_as_tfds_and_read_back(corpus_dir, tmp_path):
  prepare.prepare("fortunes", str(tmp_path / "tfds"))
  _, splits = fortunes.load()
  for split in ("train", "test"):
    source = sources.get_source("fortunes", split, str(tmp_path / "tfds"))
    got = [(text.decode_text(source[i]["text"]), int(source[i]["category"]))
           for i in range(len(source))]
    assert got == splits[split]
  info = sources.dataset_info("fortunes", str(tmp_path / "tfds"), label_key="category")
  assert info.num_classes == 2 and info.split_sizes == {"train": 6, "test": 1}


def test_missing_files_name_the_install_command(tmp_path, monkeypatch):
  monkeypatch.setenv(fortunes.SOURCE_DIR_ENV, str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="apt-get install -y fortunes fortunes-min"):
    fortunes.load()


def test_tokenizer_special_ids_encoding_and_preprocess(tmp_path):
  path = str(tmp_path / "tok.json")
  corpus = ["the cat sat on the mat", "a dog barks loudly", "cats and dogs"] * 20
  text.train_tokenizer(corpus, 60, path)
  tokenizer = text.load_tokenizer(path)
  assert [tokenizer.token_to_id(t) for t in text.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
  ids = text.encode(tokenizer, "The cat sat", 8)
  pieces = tokenizer.encode("the cat sat", add_special_tokens=False).ids
  assert ids.dtype == np.int32 and ids.tolist() == [2, *pieces, 3] + [0] * (8 - 2 - len(pieces))
  short = text.encode(tokenizer, "the cat sat on the mat " * 5, 6)
  assert short[0] == text.CLS and short[-1] == text.SEP and text.PAD not in short
  # The loader's host preprocess: text -> tokens, picklable for grain's worker processes.
  records = [{"text": b"a dog barks", "category": np.int64(1)}, {"text": b"cats", "category": np.int64(0)}]
  tokenize = text.Tokenize(path, 8)
  batch = pipeline.stack_records(records, ("text", "category"), tokenize)
  assert set(batch) == {"tokens", "category"} and batch["tokens"].shape == (2, 8)
  assert batch["tokens"].dtype == np.int32 and batch["category"].dtype == np.int32
  np.testing.assert_array_equal(batch["tokens"][1], text.encode(tokenizer, "cats", 8))
  assert pickle.loads(pickle.dumps(tokenize))(records[1])["tokens"].tolist() == batch["tokens"][1].tolist()
  with pytest.raises(FileNotFoundError, match="python -m ssl_jax.data.text"):
    text.load_tokenizer(str(tmp_path / "missing.json"))


@pytest.mark.skipif(not (fortunes.source_dir() / "fortunes").exists(),
                    reason="the fortune files are installed by scripts/setup.sh")
def test_real_corpus_splits_and_tokenizer_round_trip(tmp_path):
  names, splits = fortunes.load()
  assert len(names) >= 30 and 12_000 < len(splits["train"]) and 1_000 < len(splits["test"])
  assert 0.07 < len(splits["test"]) / (len(splits["train"]) + len(splits["test"])) < 0.13
  texts = [t for t, _ in splits["train"]]
  assert not any(c in t for t in texts for c in "\b\x07")
  assert not {" ".join(t.split()) for t in texts} & {" ".join(t.split()) for t, _ in splits["test"]}
  tokenizer = text.train_tokenizer(texts, 8192, str(tmp_path / "tok.json"))
  # Every train text decodes back to its normalised words (lower case, punctuation apart).
  for t in texts:
    ids = tokenizer.encode(t, add_special_tokens=False).ids
    words = tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(t))
    assert text.UNK not in ids and tokenizer.decode(ids) == " ".join(w for w, _ in words), t


def test_a_data_config_with_a_tokenizer_tokenises_in_the_loader(corpus_dir, tmp_path):
  import ml_collections
  from ssl_jax.data import preprocess
  data_dir = str(tmp_path / "tfds")
  prepare.prepare("fortunes", data_dir)
  assert text.main(["fortunes", "--vocab_size", "64", "--data_dir", data_dir]) == 0
  data = ml_collections.ConfigDict(dict(name="fortunes", data_dir=data_dir, tokenizer="wordpiece_64",
                                        max_length=16, text_key="text"))
  tokenize = preprocess.from_config(data)
  assert tokenize.path == text.tokenizer_path("fortunes", "wordpiece_64", data_dir)
  source = sources.get_source("fortunes", "train", data_dir)
  batch = pipeline.read_batch(source, [0, 1], ("text", "category"), tokenize)
  want = text.encode(text.load_tokenizer(tokenize.path), "The cat sat.", 16)
  np.testing.assert_array_equal(batch["tokens"][0], want)

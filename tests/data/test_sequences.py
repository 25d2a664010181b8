"""Texts as pretraining sequences (ssl_jax/data/sequences.py): sentence splitting and pair
cutting by hand, NSP/SOP pairs on the real fortune corpus against the tokenizer run on the
texts themselves (balance, negatives from other records, [CLS] A [SEP] B [SEP] and its
token types), first-fit packing by hand, and packed sequences that hold every piece of
every text exactly once."""
import collections
import pickle

import numpy as np
import pytest

from experiments import common
from ssl_jax.core.errors import ConfigError
from ssl_jax.data import presets, sequences, sources, text


def test_sentence_boundaries_by_hand():
  value = ('He said "Go." Then left!  Why?\nNo idea\n\nNew paragraph.\n\t-- Somebody')
  assert sequences.split_sentences(value) == [
      'He said "Go."', "Then left!", "Why?", "No idea", "New paragraph.", "-- Somebody"]
  assert sequences.split_sentences("e.g.the same 3.14 token") == ["e.g.the same 3.14 token"]
  assert sequences.split_sentences("  one sentence  ") == ["one sentence"]


def test_halves_cut_at_sentences_then_words():
  rng = np.random.default_rng(0)
  cuts = {sequences.halves("A b. C d. E f.", rng) for _ in range(50)}
  assert cuts == {("A b.", "C d.\nE f."), ("A b.\nC d.", "E f.")}
  cuts = {sequences.halves("one two three", rng) for _ in range(50)}
  assert cuts == {("one", "two three"), ("one two", "three")}
  assert sequences.halves("single", rng) is None


def test_fit_pair_trims_the_longer_side_from_the_outside():
  a, b = list(range(10)), list(range(100, 104))
  assert sequences.fit_pair(a, b, 20) == (a, b)
  # 14 pieces into 8: A (the longer) loses its first 6 until the two are level at 4 + 4.
  assert sequences.fit_pair(a, b, 8) == (list(range(6, 10)), b)
  # Level, then each loses in turn: B first at a tie.
  assert sequences.fit_pair(a, b, 5) == (list(range(7, 10)), [100, 101])


def test_first_fit_packing_by_hand():
  assert sequences.pack_units([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
  # 6 opens a second sequence, 2 goes back to the first (first fit), 3 opens a third.
  assert sequences.pack_units([5, 6, 2, 3, 1], 8) == [[0, 2, 4], [1], [3]]
  # One open sequence at a time: the fullest closes, nothing goes back to it.
  assert sequences.pack_units([5, 6, 2, 3, 1], 8, open_limit=1) == [[0], [1, 2], [3, 4]]
  with pytest.raises(ValueError):
    sequences.pack_units([9], 8)


@pytest.fixture(scope="module")
def corpus(tiny_data_dir):
  """The real fortune train split and the smoke runs' 512-piece tokenizer."""
  source = sources.get_source("fortunes", "train", tiny_data_dir)
  path = text.tokenizer_path("fortunes", common.SMOKE_TOKENIZER[0], tiny_data_dir)
  return source, path, text.load_tokenizer(path)


def _pieces(tokenizer, value):
  return tokenizer.encode(value, add_special_tokens=False).ids


def _record_text(source, index):
  return text.decode_text(source[index]["text"])


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_sentence_pairs_on_the_real_corpus(corpus, task):
  source, path, tokenizer = corpus
  pairs = sequences.SentencePairs(source, path, max_length=64, seed=3, task=task)
  indices = range(0, len(source), 7)  # ~1,900 records spread over every category
  labels = []
  for index in indices:
    plan = pairs.plan(index)
    labels.append(plan["label"])
    home = _record_text(source, plan["a_record"])
    assert plan["a_record"] == index or sequences.halves(_record_text(source, index),
                                                         np.random.default_rng(0)) is None
    if task == "nsp" and plan["label"] == 0:
      assert plan["b_record"] != plan["a_record"]
      assert _record_text(source, plan["b_record"]) != home  # never from the same text
      # B is the other text's second half (words joined by single spaces when it was cut
      # at a word boundary).
      assert " ".join(plan["b"].split()) in " ".join(_record_text(source, plan["b_record"]).split())
    else:
      assert plan["b_record"] == plan["a_record"]
      first, second = (plan["a"], plan["b"]) if plan["label"] else (plan["b"], plan["a"])
      # Cut at whitespace: the two halves' pieces are the whole text's pieces.
      assert _pieces(tokenizer, first) + _pieces(tokenizer, second) == _pieces(tokenizer, home)
    if index % 5 == 0:  # the encoded example against the tokenizer run on A and B
      example = pairs[index]
      a, b = sequences.fit_pair(_pieces(tokenizer, plan["a"]), _pieces(tokenizer, plan["b"]), 61)
      want = [text.CLS, *a, text.SEP, *b, text.SEP]
      np.testing.assert_array_equal(example["tokens"][:len(want)], want)
      assert (example["tokens"][len(want):] == text.PAD).all()
      np.testing.assert_array_equal(example["token_types"],
                                    [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (64 - len(want)))
      assert int(example["pair_label"]) == plan["label"]
  # Balanced: |share - 1/2| within 4 binomial standard deviations.
  share = np.mean(labels)
  assert abs(share - 0.5) < 4 * np.sqrt(0.25 / len(labels)), share
  # A pure function of (seed, index): the same in a copy sent to a loader worker.
  again = pickle.loads(pickle.dumps(pairs))
  np.testing.assert_array_equal(again[11]["tokens"], pairs[11]["tokens"])
  other_seed = sequences.SentencePairs(source, path, 64, seed=4, task=task)
  assert [other_seed.plan(i)["label"] for i in indices] != labels


def test_pair_statistics_say_how_the_corpus_splits(corpus):
  source, path, _ = corpus
  stats = sequences.pair_statistics(sequences.SentencePairs(source, path, 64, seed=0),
                                    range(0, len(source), 13))
  parts = stats["sentence_fraction"] + stats["word_fraction"] + stats["unsplittable_fraction"]
  assert abs(parts - 1) < 1e-9 and stats["sentence_fraction"] > 0.5


@pytest.mark.parametrize("within", [True, False])
def test_packing_holds_every_piece_once(corpus, within):
  source, path, tokenizer = corpus
  subset = [source[i] for i in range(0, len(source), 9)]  # ~1,500 texts of every category
  packed = sequences.PackedTexts(subset, path, max_length=32, seed=0, within=within,
                                 log=lambda *a, **k: None)
  rebuilt = collections.defaultdict(list)
  real = 0
  for index, example in enumerate(packed.__getitems__(range(len(packed)))):
    tokens = example["tokens"]
    real += int((tokens != text.PAD).sum())
    units = packed.sequence_units[index]
    # Each unit [CLS] body [SEP], one after the other, then padding.
    starts = np.flatnonzero(tokens == text.CLS)
    assert len(starts) == len(units) and starts[0] == 0
    ends = np.flatnonzero(tokens == text.SEP)
    for number, (unit, start, end) in enumerate(zip(units, starts, ends), start=1):
      rebuilt[int(packed.unit_record[unit])].append((int(packed.unit_offset[unit]),
                                                     list(tokens[start + 1:end])))
      if within:
        np.testing.assert_array_equal(example["segments"][start:end + 1], number)
        np.testing.assert_array_equal(example["positions"][start:end + 1], np.arange(end + 1 - start))
    assert (tokens[ends[-1] + 1:] == text.PAD).all()
    if within:
      assert (example["segments"][ends[-1] + 1:] == 0).all()
    else:
      assert set(example) == {"tokens"}
  assert sorted(rebuilt) == list(range(len(subset)))
  for record, chunks in rebuilt.items():
    whole = [p for _, chunk in sorted(chunks) for p in chunk]
    assert whole == _pieces(tokenizer, text.decode_text(subset[record]["text"]))
  # The padding it reports is the padding there is.
  assert abs(packed.padding_fraction - (1 - real / (32 * len(packed)))) < 1e-12
  one_per_sequence = np.mean([min(len(_pieces(tokenizer, text.decode_text(r["text"]))) + 2, 32)
                              for r in subset]) / 32
  assert packed.padding_fraction < (1 - one_per_sequence) / 3


def test_layout_config_errors(tiny_data_dir):
  data = presets.data_config("fortunes", max_length=4, layout="nsp_pairs")
  with pytest.raises(ConfigError, match="max_length >= 5"):
    sequences.check_config(data)
  data.layout = "pairs"
  with pytest.raises(ConfigError, match="expected one of"):
    sequences.check_config(data)


@pytest.mark.parametrize("layout", ["packed", "nsp_pairs"])
def test_a_layout_stream_resumes_at_its_position_under_any_worker_count(tiny_data_dir, layout):
  """The train stream of a derived source is a pure function of its position: a loader
  (here in 2 worker processes) restored from a state taken after 3 batches gives the
  batches an uninterrupted one gives next."""
  from ssl_jax.data import pipeline
  data = presets.data_config("fortunes", max_length=32, layout=layout)
  data.data_dir, data.tokenizer, data.vocab_size = (tiny_data_dir, *common.SMOKE_TOKENIZER)

  def loader(workers):
    source, keys, host = sequences.training_source(data, "train[:600]", seed=5,
                                                   log=lambda *a, **k: None)
    return iter(pipeline.train_loader(source, global_batch_size=16, seed=5, keys=keys,
                                      preprocess=host, worker_count=workers))
  plain = loader(0)
  for _ in range(3):
    next(plain)
  state = plain.get_state()
  want = [next(plain) for _ in range(2)]
  resumed = loader(2)
  resumed.set_state(state)
  try:
    for expected in want:
      got = next(resumed)
      assert set(got) == set(sequences.keys(data))
      for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  finally:
    getattr(resumed, "close", lambda: None)()

"""BERT-style masked language modelling (Devlin et al. 2019, arXiv:1810.04805).

    python -m experiments.mlm --workdir /tmp/bert_fortunes                 # the default: fortunes
    python -m experiments.mlm --dataset wikipedia --workdir gs://BUCKET/bert_base_wiki

fortunes (the default; ssl_jax/data/builders/fortunes.py): a CPU budget. The bert_mlm peer's
encoder (ssl_jax/tools/bench.py: hidden 256, 4 layers, 4 heads, FFN 1024, post-norm, dropout
0.1) on 64-token sequences (83% of the texts fit whole; 48% of the positions are
padding) of the 8192-piece WordPiece tokenizer, batch 32 (the bert_mlm peer's), AdamW lr
5e-4 (b2 0.98, wd 0.01) with 100 warm-up steps, 300 steps (0.7 epochs). Evaluated by
linear and kNN probes of the mean-pooled hidden states on the 43 fortune categories. Not
tuned.

wikipedia: the recipe of BERT-base (the paper's section A.2: 12 layers, 768 wide, 12
heads; sequence 128, batch 256, Adam lr 1e-4 with 10,000 warm-up steps and linear decay
(cosine here), weight decay 0.01, dropout 0.1, 1M steps over BooksCorpus + Wikipedia).
Target: the paper's MNLI-m 84.6 after fine-tuning (Table 1), which needs GLUE, not
provided here; the pretraining MLM accuracy of BERT-base is about 70% (not reported in
the paper). Not run by us.

Variant seq512 (--variant seq512): BERT's last 10% of steps, 100k at 512 tokens (batch
256, the same optimizer), which trains the positions past 128.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data import presets
from ssl_jax.methods import mlm
from ssl_jax.models import transformer
from ssl_jax.training import optim

STEPS = 300
CONTRACT_DATASET = "fortunes"  # the method contract's smoke dataset (a text method)


def seq512(config: ml_collections.ConfigDict) -> None:
  """BERT-base's second phase, in place: 512-token sequences (the docstring's variant)."""
  common.require_dataset(config, "seq512", presets.data_config("wikipedia").name)
  config.data.max_length = 512
  config.model = transformer.default_config("base", config.data, causal=False)
  config.total_steps = 100_000


VARIANTS = {"seq512": seq512}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, variant, smoke = common.parse(arg, default_dataset="fortunes", variants=VARIANTS)
  config = common.base_config("mlm", dataset)
  config.mlm = mlm.default_config()
  if dataset == "fortunes":
    recipes.fortunes_budget(config, STEPS, causal=False)
  else:
    config.model = transformer.default_config("base", config.data, causal=False)
    config.global_batch_size = 256
    config.total_steps = 1_000_000
    config.log_every_steps = 100
    config.checkpoint_every_steps = 10_000
    config.optimizer = optim.default_config(name="adamw", learning_rate=1e-4, lr_scaling="none",
                                            b2=0.999, weight_decay=0.01, warmup_steps=10_000)
    recipes.held_out_tail(config)
  if variant:
    VARIANTS[variant](config)
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

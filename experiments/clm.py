"""GPT-style causal language modelling (Radford et al. 2018; GPT-2, Radford et al. 2019).

    python -m experiments.clm --workdir /tmp/gpt_fortunes                   # the default: fortunes
    python -m experiments.clm --dataset wikipedia --workdir gs://BUCKET/gpt2_small_wiki

fortunes (the default; ssl_jax/data/builders/fortunes.py): a CPU budget. A pre-norm causal
Transformer of the BERT experiment's size (hidden 256, 4 layers, 4 heads, FFN 1024,
dropout 0.1) on 64-token sequences (83% of the texts fit whole; 48% of the positions are
padding) of the 8192-piece WordPiece tokenizer, batch 32 (the bert_mlm peer's), AdamW lr
5e-4 (b2 0.98, wd 0.01) with 100 warm-up steps, 200 steps (0.5 epochs). Evaluated by
linear and kNN probes of the last token's hidden state on the 43 fortune categories. Not
tuned.

wikipedia: GPT-2 small's shape (12 layers, 768 wide, 12 heads; the paper's Table 2) at
its 1024-token context, batch 512, AdamW lr 6e-4 with warm-up and cosine decay (the
paper gives no schedule; these are the common reproduction's), dropout 0.1. Target for
orientation: GPT-2 small's zero-shot WikiText-103 perplexity 37.50 (the paper's Table
3), measured on WikiText-103 with GPT-2's own BPE, so not comparable number for number
with this tokenizer. Not run by us.

Variant packed (--variant packed, any text dataset): texts packed into full sequences,
attention and next-token targets kept inside each text (ssl_jax/data/sequences.py);
--config.data.layout=packed_across lets them run on across texts, as GPT-2 trains.
"""
import ml_collections

from experiments import common, recipes
from ssl_jax.data import presets
from ssl_jax.methods import clm
from ssl_jax.models import transformer
from ssl_jax.training import optim

STEPS = 200
CONTRACT_DATASET = "fortunes"  # the method contract's smoke dataset (a text method)


def packed(config: ml_collections.ConfigDict) -> None:
  """CLM on packed texts, in place (attention and targets inside each text)."""
  config.data.layout = "packed"


VARIANTS = {"packed": packed}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  dataset, variant, smoke = common.parse(arg, default_dataset="fortunes", variants=VARIANTS)
  config = common.base_config("clm", dataset)
  config.clm = clm.default_config()
  if dataset == "fortunes":
    recipes.fortunes_budget(config, STEPS, causal=True)
  else:
    config.data = presets.data_config("wikipedia", max_length=1024)
    config.model = transformer.default_config("base", config.data, causal=True)
    config.global_batch_size = 512
    config.total_steps = 600_000
    config.log_every_steps = 100
    config.checkpoint_every_steps = 10_000
    config.optimizer = optim.default_config(name="adamw", learning_rate=6e-4, lr_scaling="none",
                                            b2=0.95, weight_decay=0.1, warmup_steps=2000)
    recipes.held_out_tail(config)
  if variant:
    VARIANTS[variant](config)
  return common.smoke(config) if smoke else config


if __name__ == "__main__":
  common.main(get_config)

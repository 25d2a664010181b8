"""docs/scale.md: every paper-scale config compiled for the TPU slice that holds its batch.

    python -m experiments.scale                        # every row, then docs/scale.md
    python -m experiments.scale --rows mae:vit_l16     # rows whose name starts so
    python -m experiments.scale --page_only            # the page from the cached rows

Each row runs `python -m ssl_jax.tools.aot` (one process per compilation, as a user would)
for one config on one topology and keeps its JSON line in --cache (default
docs/scale_rows/ROW.json, kept with the page: the measurements behind it), so an
interrupted page resumes where it stopped; delete a row's file to compile it again; a row
whose compilation fails keeps its one-line error, shown in the page (one the host's
memory killer ended is recorded as such; one stopped by SIGTERM or Ctrl-C keeps nothing).
Rows are the paper presets of every image and text experiment (`--dataset imagenet2012`,
`wikipedia`, `coco_captions`) and their flagship variants, each at its paper's global batch on a v5e
slice with at least 16 GiB x chips for it, a v4 or v6e slice where a config needs more
memory per chip, and the measures that make a config fit (bf16, fsdp, remat), compiled
the same way, for the ones that do not, and the FSDP rows for MAE ViT-L and BERT-base.
"""
import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time

from experiments import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = "docs/scale.md"
START, END = "<!-- scale-table:start -->", "<!-- scale-table:end -->"
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Row:
  name: str             # unique; also the cache file's name
  config: str           # experiments/M.py:DATASET[,VARIANT]
  topology: str
  overrides: tuple = ()  # --config.x=y

  def command(self) -> list[str]:
    return ["-m", "ssl_jax.tools.aot", f"--config=experiments/{self.config}",
            f"--topology={self.topology}", *self.overrides]


def _row(name, config, topology, *overrides):
  return Row(name, config, topology, tuple(f"--config.{o}" for o in overrides))


BF16, FSDP_ALL, REMAT = "precision=bfloat16", "sharding.fsdp=-1", "model.remat=full"
ROWS = (
    # The flagship ViT recipes and the two FSDP studies first: the page's reason to exist.
    _row("dino:vit_s16", "dino.py:imagenet2012,vit_s16", "v5e:4x4"),
    _row("dino:vit_s16:bf16", "dino.py:imagenet2012,vit_s16", "v5e:4x4", BF16),
    _row("dino:vit_b16", "dino.py:imagenet2012,vit_b16", "v5e:4x4"),
    _row("dino:vit_b16:bf16", "dino.py:imagenet2012,vit_b16", "v5e:4x4", BF16),
    _row("moco:vit_b16", "moco.py:imagenet2012,vit_b16", "v5e:8x8"),
    _row("simdino:vit_b16", "simdino.py:imagenet2012,vit_b16", "v5e:4x4"),
    _row("mae:vit_b16", "mae.py:imagenet2012", "v5e:8x8"),
    _row("mae:vit_l16", "mae.py:imagenet2012,vit_l16", "v5e:8x8"),
    _row("mae:vit_l16:fsdp", "mae.py:imagenet2012,vit_l16", "v5e:8x8", FSDP_ALL),
    _row("mae:vit_l16:bf16", "mae.py:imagenet2012,vit_l16", "v5e:8x8", BF16),
    _row("mae:vit_l16:bf16+remat", "mae.py:imagenet2012,vit_l16", "v5e:8x8", BF16, REMAT),
    _row("mlm:bert_base_128", "mlm.py:wikipedia", "v5e:2x2"),
    _row("mlm:bert_base_128:fsdp", "mlm.py:wikipedia", "v5e:2x2", FSDP_ALL),
    _row("mlm:bert_base_512", "mlm.py:wikipedia,seq512", "v5e:2x2"),
    _row("mlm:bert_base_512:fsdp", "mlm.py:wikipedia,seq512", "v5e:2x2", FSDP_ALL),
    _row("mlm:bert_base_512:bf16", "mlm.py:wikipedia,seq512", "v5e:2x2", BF16),
    _row("mlm:bert_base_512:remat", "mlm.py:wikipedia,seq512", "v5e:2x2", REMAT),
    _row("mlm:bert_base_512:2x4", "mlm.py:wikipedia,seq512", "v5e:2x4"),
    _row("clip:vit_b16", "clip.py:coco_captions,vit_b16", "v5e:16x16"),
    # Every other paper preset, at its paper's batch.
    _row("simclr:rn50", "simclr.py:imagenet2012", "v5e:8x8"),
    _row("byol:rn50", "byol.py:imagenet2012", "v5e:8x8"),
    _row("moco:rn50", "moco.py:imagenet2012", "v5e:8x8"),
    _row("dino:rn50", "dino.py:imagenet2012", "v5e:8x8"),
    _row("simdino:rn50", "simdino.py:imagenet2012", "v5e:4x4"),
    _row("barlow_twins:rn50", "barlow_twins.py:imagenet2012", "v5e:8x8"),
    _row("vicreg:rn50", "vicreg.py:imagenet2012", "v5e:8x8"),
    _row("simsiam:rn50", "simsiam.py:imagenet2012", "v5e:4x4"),
    _row("clip:rn50", "clip.py:coco_captions", "v5e:16x16"),
    _row("clm:wikipedia", "clm.py:wikipedia", "v5e:2x2"),
    # 128 sequences of 1024 tokens per chip do not fit a v5e (above): 8 per chip do.
    _row("clm:wikipedia:8x8", "clm.py:wikipedia", "v5e:8x8"),
    _row("rotation:imagenet", "rotation.py:imagenet2012", "v5e:4x4"),
    _row("jigsaw:imagenet", "jigsaw.py:imagenet2012", "v5e:4x4"),
    _row("denoising:imagenet", "denoising.py:imagenet2012", "v5e:4x4"),
    _row("colorization:imagenet", "colorization.py:imagenet2012", "v5e:4x4"),
    # The same recipes on the other generations' slices of the same chip count.
    _row("mae:vit_l16:v4", "mae.py:imagenet2012,vit_l16", "v4:4x4x4"),
    _row("mae:vit_l16:v6e", "mae.py:imagenet2012,vit_l16", "v6e:8x8"),
    _row("dino:vit_b16:v6e", "dino.py:imagenet2012,vit_b16", "v6e:4x4"),
)


def cache_path(row: Row, cache: str) -> str:
  return os.path.join(cache, row.name.replace(":", "__") + ".json")


def cached_report(row: Row, cache: str) -> dict | None:
  """The row's kept report (or error), None if it was never compiled."""
  path = cache_path(row, cache)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_row(row: Row, cache: str) -> dict:
  """The row's aot report (or its error), compiling unless the cache has it."""
  path = cache_path(row, cache)
  kept = cached_report(row, cache)
  if kept is not None:
    return kept
  print(f"== {row.name}: python {' '.join(row.command())}", flush=True)
  start = time.perf_counter()
  result = subprocess.run([sys.executable, *row.command()], cwd=ROOT, capture_output=True,
                          text=True)
  wall = time.perf_counter() - start
  if result.returncode == 0:
    record = {"report": json.loads(result.stdout.splitlines()[0])}
    print(result.stdout.split("\n", 1)[1], flush=True)
  elif result.returncode < 0 and -result.returncode != signal.SIGKILL:
    # Stopped from outside (SIGTERM, SIGINT): not a property of the row; nothing is kept.
    raise SystemExit(f"{row.name}: the compiler was stopped by signal {-result.returncode} "
                     f"after {wall:.0f} s; nothing recorded, rerun to compile it")
  elif result.returncode < 0:  # SIGKILL: on a CPU host, mostly the kernel's OOM killer
    record = {"error": f"the compiler was killed by signal {-result.returncode} after "
                       f"{wall:.0f} s on a host with {host_memory_gib():.0f} GiB of memory "
                       "(SIGKILL: most likely out of host memory; compile it on a larger host)"}
    print(record["error"], flush=True)
  else:
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
    record = {"error": errors[-1] if errors else lines[-1][:300]}
    print(record["error"], flush=True)
  record.update(wall_s=wall, host=platform.processor() or platform.machine())
  os.makedirs(cache, exist_ok=True)
  with open(path, "w") as f:
    json.dump(record, f)
  return record


def host_memory_gib() -> float:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def _gib(value) -> str:
  return f"{value / GIB:.1f}"


def _hours(seconds) -> str:
  if seconds is None:
    return "-"
  return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def markdown(rows: list[tuple[Row, dict | None]]) -> str:
  head = ("| row | config | slice | batch | precision, fsdp, remat | state / total GiB per "
          "chip (HBM) | fits | compiled / model FLOPs | step (roofline) | bound, MFU <= | epoch "
          "| whole run | eval extraction GiB | compile |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for row, record in rows:
    extra = " ".join(o.replace("--config.", "") for o in row.overrides)
    config = f"`{row.config}`" + (f" `{extra}`" if extra else "")
    if record is None:
      lines.append(f"| {row.name} | {config} | {row.topology} | | | not compiled yet |"
                   + " |" * 8)
      continue
    if "error" in record:
      lines.append(f"| {row.name} | {config} | {row.topology} | | | {record['error']} |"
                   + " |" * 8)
      continue
    r = record["report"]
    t, e = r["train"], r.get("eval")
    prefix = (f"| {row.name} | {config} | {r['topology']} ({r['chips']} x {r['chip']}) | "
              f"{r['global_batch']} | {r['precision']}, {r['fsdp']}, {r['remat']} | ")
    if "out_of_memory" in t:
      needed = t.get("required_temp_bytes")
      lines.append(
          f"{prefix}{_gib(t['state_bytes'])} / needs {_gib(needed) if needed else '?'} of "
          f"temporaries ({_gib(t['hbm_bytes'])}) | **no** (the compiler refused) |" + " |" * 6
          + f" {t['compile_s']:.0f} s |")
      continue
    lines.append(
        f"{prefix}{_gib(t['state_bytes'])} / {_gib(t['total_bytes'])} ({_gib(t['hbm_bytes'])}) | "
        f"{'yes' if t['fits'] else '**no**'} | "
        f"{t['flops_per_chip'] * r['chips'] / t['model_flops']:.2f} | "
        f"{t['roofline_s'] * 1e3:.0f} ms | "
        f"{t['bound']}, {t['mfu_bound']:.0%} | {_hours(t.get('roofline_epoch_s'))} | "
        f"{_hours(t['roofline_run_s'])} | {_gib(e['total_bytes']) if e else '-'} | "
        f"{t['compile_s'] + (e['compile_s'] if e else 0):.0f} s |")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default="", help="comma-separated row-name prefixes (all)")
  parser.add_argument("--cache", default=os.path.join(ROOT, "docs", "scale_rows"))
  parser.add_argument("--page", default=os.path.join(ROOT, PAGE))
  parser.add_argument("--page_only", action="store_true", help="no compiling: cached rows only")
  args = parser.parse_args(argv)
  prefixes = [p for p in args.rows.split(",") if p]
  chosen = [r for r in ROWS if not prefixes or any(r.name.startswith(p) for p in prefixes)]
  if not args.page_only:
    for row in chosen:
      run_row(row, args.cache)
  if args.page:
    # Every row, from the cache as it stands now: also those another run compiled meanwhile.
    reports = [(row, cached_report(row, args.cache)) for row in ROWS]
    table.replace_section(args.page, START, END, markdown(reports))
    print(f"wrote {args.page}")


if __name__ == "__main__":
  main()

"""The ratios of a scripts/gpu_bench.sh run: python3 scripts/gpu_bench_table.py RESULTS.jsonl

Per spec, ssl_jax's items/s in float32 and bfloat16 against the PyTorch peer's float32 eager
and bf16 + compile steps; the peers' MFU uses ssl_jax's model FLOP count of the same spec
(the peers report none). Then the demo's real-data steps against the synthetic one, and the
state held per device.
"""
import json
import sys


def main(path: str) -> None:
  rows = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      rows[record["label"]] = record
  failed = [label for label, r in rows.items() if "error" in r]
  print(f"\n{len(rows)} measurements, {len(failed)} failed" +
        (f": {', '.join(failed)}" if failed else ""))
  print(f"\n{'spec':<16} {'ssl_jax f32':>12} {'ssl_jax bf16':>13} {'torch f32':>10} "
        f"{'torch bf16+c':>13} {'bf16 vs bf16+c':>15} {'MFU (ours bf16)':>16}")
  for spec in ("simclr_resnet18", "mae_vit", "bert_mlm"):
    ours32, ours16 = rows.get(f"ssl_jax:{spec}:float32", {}), rows.get(f"ssl_jax:{spec}:bfloat16", {})
    eager, compiled = rows.get(f"torch:{spec}:float32-eager", {}), rows.get(f"torch:{spec}:bf16-compile", {})
    rate = lambda r: r.get("items_per_s")
    ratio = (f"{rate(ours16) / rate(compiled):.2f}x" if rate(ours16) and rate(compiled) else "-")
    mfu = ours16.get("mfu")
    print(f"{spec:<16} {rate(ours32) or '-':>12} {rate(ours16) or '-':>13} {rate(eager) or '-':>10} "
          f"{rate(compiled) or '-':>13} {ratio:>15} {f'{mfu:.1%}' if mfu else '-':>16}")
  synthetic = rows.get("demo:synthetic", {}).get("items_per_s")
  for label, record in rows.items():
    if label.startswith("demo:real") and record.get("items_per_s") and synthetic:
      print(f"{label}: {record['items_per_s']} img/s, {record['items_per_s'] / synthetic:.1%} of "
            f"synthetic ({synthetic}); input wait {record.get('input_wait_fraction')}")
  for label, record in rows.items():
    if label.startswith("fsdp:") and "state_bytes_per_device" in record:
      print(f"{label}: {record['state_bytes_per_device'] / 2**20:.1f} MiB of state per device")


if __name__ == "__main__":
  main(sys.argv[1])

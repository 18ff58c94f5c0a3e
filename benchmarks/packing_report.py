"""Token slots each layout runs on a realistic length mix: SFT padded vs packed
(``data.packing``), reward-model pairs two-row vs shared-prompt vs packed.

Rows are drawn as in ``benchmarks/dpo_step.py --mix`` (prompts 32-256, responses 16-256
tokens, uniform; chosen and rejected drawn apart) and batched in file order. Each batch is laid
out by the library's own functions (``data.packing.packed_rows``, ``data.pair_layout.
shared_prompt_pairs``, ``data.pair_packing.packed_pairs``), padded rows at the batch's
power-of-two bucket as ``BatchIterator`` pads them. A slot is one token position the layers
run (padding included); fewer slots is less work per step, and the attention columns give the
sum over rows of width squared (the score matrix each row's attention builds). Counting only:
nothing is timed.

    python -m benchmarks.packing_report [--rows 4096] [--batch-sizes 8 32] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from jaxalign.data.batches import bucket_length, default_buckets
from jaxalign.data.packing import packed_rows
from jaxalign.data.pair_layout import shared_prompt_pairs
from jaxalign.data.pair_packing import packed_pairs

PROMPT, RESPONSE = (32, 256), (16, 256)
MAX_LENGTH = PROMPT[1] + RESPONSE[1]


def _lengths(rng, n: int) -> dict[str, np.ndarray]:
  draw = lambda bounds: rng.integers(bounds[0], bounds[1] + 1, n)
  return {"prompt": draw(PROMPT), "chosen": draw(RESPONSE), "rejected": draw(RESPONSE)}


def _rows(prompts, responses, width: int, rng) -> dict[str, np.ndarray]:
  """Right-padded (tokens, attention_mask, loss_mask) [B, width] of prompt + response; the
  prompt ids are the pair's own (``prompts`` holds arrays), the response ids fresh."""
  B = len(prompts)
  out = {k: np.zeros((B, width), np.int32) for k in ("tokens", "attention_mask", "loss_mask")}
  for b, (prompt, n) in enumerate(zip(prompts, responses)):
    p = len(prompt)
    out["tokens"][b, :p + n] = np.concatenate([prompt, rng.integers(3, 8000, n)])
    out["attention_mask"][b, :p + n] = 1
    out["loss_mask"][b, p:p + n] = 1
  return out


def _slots(arrays: dict, key: str, mask: str) -> tuple[int, int, int]:
  """(slots, attention entries, real tokens held) of one laid-out batch."""
  rows = arrays[key]
  return int(rows.size), int(rows.shape[0] * rows.shape[1] ** 2), int(arrays[mask].sum())


def measure(num_rows: int, batch_size: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  lengths = _lengths(rng, num_rows)
  buckets = default_buckets(MAX_LENGTH)
  totals: dict[str, np.ndarray] = {}
  add = lambda name, value: totals.__setitem__(name, totals.get(name, 0) + np.asarray(value))
  for start in range(0, num_rows - batch_size + 1, batch_size):
    part = slice(start, start + batch_size)
    prompts = [rng.integers(3, 8000, n) for n in lengths["prompt"][part]]
    chosen, rejected = lengths["chosen"][part], lengths["rejected"][part]
    # SFT on the chosen responses.
    sft = _rows(prompts, chosen, bucket_length(int(max(map(len, prompts)) + chosen.max()),
                                               buckets), rng)
    add("sft padded", _slots(sft, "tokens", "attention_mask"))
    add("sft packed", _slots(packed_rows(sft), "tokens", "attention_mask"))
    # Pairs: both sides padded to the batch's bucket, as the two-row layout runs them.
    width = bucket_length(int(max(len(p) + max(c, r) for p, c, r in
                                  zip(prompts, chosen, rejected))), buckets)
    c, r = _rows(prompts, chosen, width, rng), _rows(prompts, rejected, width, rng)
    pairs = {f"{side}_{k}": v for side, rows in (("chosen", c), ("rejected", r))
             for k, v in rows.items()}
    two_rows = [_slots(rows, "tokens", "attention_mask") for rows in (c, r)]
    add("pairs two-row", tuple(a + b for a, b in zip(*two_rows)))
    mask = "pair_attention_mask"
    add("pairs shared-prompt", _slots(shared_prompt_pairs(pairs), "pair_tokens", mask))
    add("pairs packed", _slots(packed_pairs(pairs), "pair_tokens", mask))
    add("pairs packed, prompt not shared",
        _slots(packed_pairs(pairs, share_prompt=False), "pair_tokens", mask))
  report = {}
  for kind, base in (("sft", "sft padded"), ("pairs", "pairs two-row")):
    for name, (slots, attention, real) in totals.items():
      if name.startswith(kind):
        report[name] = {"slots": int(slots), "real_tokens": int(real),
                        "padding_fraction": 1 - real / slots,
                        "slots_vs_padded": slots / totals[base][0],
                        "attention_vs_padded": attention / totals[base][1]}
  return report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rows", type=int, default=4096)
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="results/packing_report.json")
  args = parser.parse_args()
  print(f"length mix: prompts {PROMPT[0]}-{PROMPT[1]}, responses {RESPONSE[0]}-{RESPONSE[1]} "
        f"tokens, uniform; {args.rows} rows; padded rows at power-of-two buckets up to "
        f"{MAX_LENGTH}. padding: the layout's slots holding no token (a shared prompt is "
        "one token per position).")
  results = {}
  for batch_size in args.batch_sizes:
    report = measure(args.rows, batch_size, args.seed)
    results[str(batch_size)] = report
    print(f"\nbatch {batch_size}:")
    print(f"  {'layout':<34} {'slots':>10} {'tokens':>10} {'padding':>8} "
          f"{'slots vs padded':>16} {'attention vs padded':>20}")
    for name, r in report.items():
      print(f"  {name:<34} {r['slots']:>10,} {r['real_tokens']:>10,} {r['padding_fraction']:>8.1%} "
            f"{r['slots_vs_padded']:>15.2f}x {r['attention_vs_padded']:>19.2f}x")
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"rows": args.rows, "seed": args.seed, "prompt": PROMPT, "response": RESPONSE,
               "batches": results}, f, indent=1)
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()

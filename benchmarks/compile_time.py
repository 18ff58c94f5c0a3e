"""Compile time of one jitted forward + backward, unrolled layers vs `model.scan_layers`.

A Llama-style model (width 256, 4 heads, GQA 2 kv heads, MLP 512, vocab 1024) at 2 and at
32 layers (`--layers`), batch [4, 128], f32. Params are abstract (`jax.ShapeDtypeStruct`s:
nothing is allocated), the loss is the summed log-softmax of the logits, and the time is
`jit(grad).lower(...).compile()` wall time, with the persistent compilation cache off so
every compile is a real one. Prints a table and the 32-layer / 2-layer ratio per layout.

Usage: .venv/bin/python -m benchmarks.compile_time [--layers 2 32] [--reps 1]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from jaxalign.models import Transformer
from jaxalign.models.config import llama_config


def _config(num_layers: int, scan: bool):
  return llama_config(vocab_size=1024, embed_dim=256, num_layers=num_layers, num_heads=4,
                      num_kv_heads=2, head_dim=64, mlp_dim=512, max_seq_len=256,
                      eos_token_id=2, bos_token_id=1, scan_layers=scan)


def compile_seconds(num_layers: int, scan: bool, batch=(4, 128)) -> float:
  """Wall seconds of lowering + compiling value_and_grad of the loss on abstract params."""
  config = _config(num_layers, scan)
  model = Transformer(config)
  tokens = jax.ShapeDtypeStruct(batch, jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, 1), jnp.int32))["params"])

  def loss(p, t):
    return jnp.sum(jax.nn.log_softmax(model.apply({"params": p}, t)))

  start = time.perf_counter()
  jax.jit(jax.value_and_grad(loss)).lower(params, tokens).compile()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layers", nargs="+", type=int, default=[2, 32])
  parser.add_argument("--reps", type=int, default=1, help="compiles per cell (median)")
  args = parser.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)
  rows = {}
  for scan in (False, True):
    for layers in args.layers:
      times = sorted(compile_seconds(layers, scan) for _ in range(args.reps))
      rows[scan, layers] = times[len(times) // 2]
      print(f"{'scan' if scan else 'unrolled':8s} {layers:3d} layers: "
            f"{rows[scan, layers]:.2f} s", flush=True)
  low, high = min(args.layers), max(args.layers)
  print("\n| layout | " + " | ".join(f"{n} layers" for n in args.layers)
        + f" | {high} / {low} |")
  print("|---|" + "---|" * (len(args.layers) + 1))
  for scan in (False, True):
    cells = " | ".join(f"{rows[scan, n]:.2f} s" for n in args.layers)
    print(f"| {'scan_layers' if scan else 'unrolled'} | {cells} | "
          f"{rows[scan, high] / rows[scan, low]:.1f}x |")


if __name__ == "__main__":
  main()

"""Sampler throughput: jaxalign.sampling.generate against transformers' generate.

Same random weights on both sides (built in transformers, loaded with load_pretrained),
batch 16 and 64 (``--batch``), prompt 64, 128 new tokens, f32, KV cache on, greedy and
sampling, EOS disabled so every row generates the full budget. Both sides alternate in one
script run; the ratio of new tokens per second is printed per row. Usage:

  .venv/bin/python -m benchmarks.sampler [--family gpt2 llama] [--batch 16 64]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import build_peer_model, fmt, machine_load, timed
from jaxalign.models import Transformer, init_cache, load_pretrained
from jaxalign.sampling import generate

P, N = 64, 128


def ours(config, params, prompt, mask, greedy, reps=3):
  B = prompt.shape[0]
  kwargs = dict(max_new_tokens=N, temperature=0.0 if greedy else 1.0)
  run = lambda: jax.block_until_ready(
      generate(config, params, prompt, mask, jax.random.key(0), **kwargs).tokens)
  total = timed(run, reps)
  prefill_fn = jax.jit(lambda p, t, m: Transformer(config).apply(
      {"params": p}, t, attention_mask=m, cache=init_cache(config, B, P + N - 1))[0])
  prefill = timed(lambda: jax.block_until_ready(prefill_fn(params, prompt, mask)), reps)
  return total, prefill


def peer(model, prompt, greedy, reps=3):
  import torch
  ids = torch.tensor(np.asarray(prompt), dtype=torch.long)
  kwargs = dict(max_new_tokens=N, min_new_tokens=N, use_cache=True, eos_token_id=None,
                pad_token_id=0, do_sample=not greedy)
  if not greedy:
    kwargs.update(temperature=1.0, top_k=0, top_p=1.0)

  def run(max_new=N):
    with torch.inference_mode():
      model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                     **dict(kwargs, max_new_tokens=max_new, min_new_tokens=max_new))
  return timed(run, reps), timed(lambda: run(1), reps)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--family", nargs="+", default=["gpt2", "llama"])
  parser.add_argument("--batch", nargs="+", type=int, default=[16, 64])
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  import torch
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
        f"load before start {machine_load():.2f} busy cores")
  for family in args.family:
    model, path = build_peer_model(family)
    config, params = load_pretrained(path)
    for B in args.batch:
      prompt = jax.random.randint(jax.random.key(2), (B, P), 0, config.vocab_size)
      mask = jnp.ones_like(prompt)
      for greedy in (True, False):
        row = f"[{family} B={B} {'greedy' if greedy else 'sample'}]"
        total, prefill = ours(config, params, prompt, mask, greedy, args.reps)
        ptotal, pprefill = peer(model, prompt, greedy, args.reps)
        tps, ptps = B * N / total["median"], B * N / ptotal["median"]
        decode = (total["median"] - prefill["median"]) / (N - 1) * 1e3
        pdecode = (ptotal["median"] - pprefill["median"]) / (N - 1) * 1e3
        print(f"{row} jaxalign: {fmt(total)} = {tps:.0f} new tok/s; prefill "
              f"{prefill['median']:.3f}s, decode {decode:.1f} ms/step")
        print(f"{row} transformers: {fmt(ptotal)} = {ptps:.0f} new tok/s; prefill+1 "
              f"{pprefill['median']:.3f}s, decode {pdecode:.1f} ms/step")
        print(f"{row} ratio jaxalign / transformers (new tokens/s): {tps / ptps:.2f}x")


if __name__ == "__main__":
  main()

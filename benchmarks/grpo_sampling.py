"""GRPO's sampling: G samples per prompt from one prefill against repeating each prompt G times.

A GRPO / RLOO iteration samples ``group_size`` G responses for every prompt. TRL's
GRPOTrainer (its ``RepeatSampler``) and transformers' ``generate(num_return_sequences=G)``
repeat each prompt G times, so the prompt runs through the model G times; ``jaxalign``'s
``generate(..., num_samples=G)`` prefills each prompt once and repeats its KV cache
(``jaxalign train grpo`` does this). Long prompts and short answers (the RL-on-reasoning
shape) are where it matters. Rows, on the same random GPT-2 weights, f32, sampling at T = 1,
EOS off so every row generates the whole budget:

- jaxalign, ``num_samples=G`` (one prefill per prompt);
- jaxalign, prompts repeated G times (``num_samples=1``): the same work as the peers;
- transformers ``generate(num_return_sequences=G)`` (what TRL calls).

All alternate in one run; the ratios are printed last. Usage:

  .venv/bin/python -m benchmarks.grpo_sampling [--prompts 8] [--group 8] [--prompt-len 512]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import build_peer_model, fmt, machine_load, timed
from jaxalign.models import load_pretrained
from jaxalign.sampling import generate


def ours(config, params, prompt, group: int, new: int, shared: bool, reps: int):
  mask = jnp.ones_like(prompt)
  if not shared:
    prompt, mask = jnp.repeat(prompt, group, axis=0), jnp.repeat(mask, group, axis=0)
  kwargs = dict(max_new_tokens=new, temperature=1.0, num_samples=group if shared else 1)
  run = lambda: jax.block_until_ready(
      generate(config, params, prompt, mask, jax.random.key(0), **kwargs).tokens)
  tokens = np.asarray(generate(config, params, prompt, mask, jax.random.key(0),
                               **kwargs).tokens)
  assert tokens.shape[0] == prompt.shape[0] * (group if shared else 1)
  return timed(run, reps=reps)


def peer(model, prompt, group: int, new: int, reps: int):
  import torch
  ids = torch.tensor(np.asarray(prompt), dtype=torch.long)

  def run():
    with torch.inference_mode():
      model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                     temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=group,
                     max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
                     pad_token_id=0, use_cache=True)
  return timed(run, reps=reps)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--group", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=512)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  import torch
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
        f"load before start {machine_load():.2f} busy cores")
  P, G, N = args.prompts, args.group, args.new_tokens
  print(f"{P} prompts x {G} samples, prompt {args.prompt_len} tokens, {N} new tokens, "
        f"GPT-2 benchmark shape, f32")
  model, path = build_peer_model("gpt2")
  config, params = load_pretrained(path)
  prompt = jax.random.randint(jax.random.key(2), (P, args.prompt_len), 0, config.vocab_size)
  shared = ours(config, params, prompt, G, N, True, args.reps)
  repeated = ours(config, params, prompt, G, N, False, args.reps)
  hf = peer(model, prompt, G, N, args.reps)
  rows = P * G * N
  for name, stats in (("jaxalign, one prefill per prompt", shared),
                      ("jaxalign, prompt repeated G times", repeated),
                      ("transformers num_return_sequences", hf)):
    print(f"{name}: {fmt(stats)} = {rows / stats['median']:.0f} new tok/s")
  print(f"ratio one prefill / repeated prompts (jaxalign, same sampler): "
        f"{repeated['median'] / shared['median']:.2f}x")
  print(f"ratio jaxalign one prefill / transformers: {hf['median'] / shared['median']:.2f}x")


if __name__ == "__main__":
  main()

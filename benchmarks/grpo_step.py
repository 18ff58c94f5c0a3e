"""One GRPO iteration: jaxalign's (sampling / scoring / update) against TRL's GRPOTrainer.

Shapes: 16 prompts x G = 8 samples, prompt 64 tokens, 128 new tokens, so one iteration is
128 samples of 192 tokens = 24576 tokens; the GPT-2-style benchmark model (8 layers, width
512, 8 heads, vocab 8192, tied embeddings; random weights built in transformers, loaded into
jaxalign with load_pretrained, so both sides start from the same weights); f32.
Prompts: random ids below EOS, travelling to TRL as word-level text (``t5 t17 ...``, the
tokenizer of common.save_word_tokenizer), checked to tokenize back to the same ids; every
iteration takes the next 16, in the same order on both sides. Every sample generates the
whole budget: ours samples with EOS off, TRL with ``generation_kwargs={"min_new_tokens":
128}`` (EOS masked until the budget; checked: every TRL completion has 128 tokens). Sampling
at temperature 1, no top-k / top-p. Reward: a fixed cheap function of the completion ids (a
position-weighted id sum mod 101), the same code on both sides. Loss: TRL's defaults, i.e.
``loss_type="dapo"`` (ours ``aggregation=token_mean``), beta 0 (ours ``kl_coef=0``: no
reference), ``num_iterations=1``, clip 0.2 both ways, group-scaled advantages (unbiased std,
eps 1e-4); one optimizer step per iteration on all 128 samples, accumulated over
``--micro-batches`` 4 micro-batches of 32 on both sides (TRL: per_device_train_batch_size 32,
gradient_accumulation_steps 4, so it generates once per step; 1 = one pass on all 128 needs
~13 GiB per side, which the shared machine cannot be relied on to hold twice over: our
update's XLA temporaries are 12 GiB, as the GRPO loss materialises the full [B, T, V]
logits and their log-softmax); AdamW lr 1e-6 (TRL's default), betas (0.9,
0.999), eps 1e-8, no weight decay, global-norm clip 1.0; no dropout; TRL without gradient
checkpointing (its default is on: ``--configs trl-ckpt``).

Phases. Ours: sampling (``sample_rollout(num_samples=G)``: one prefill per prompt), scoring
(rewards on the host, then ``make_group_experience``: one training-layout forward for the
old log-probs, advantages, metrics), update (``grpo_update``: forward + backward + AdamW).
TRL: sampling = ``_generate`` (tokenize, ``model.generate`` on prompts repeated G times,
decode); scoring = the rest of ``_prepare_inputs`` (rewards, advantages, padding; with
num_iterations = 1 TRL skips the old-log-prob forward and uses the detached new log-probs,
so its scoring does one forward less than ours); update = the rest of the optimizer step
(loss forward + backward, clip, AdamW), from the Trainer's on_step_begin to on_step_end.
Tokens/s = 24576 / iteration seconds (sum of the three phases), median over ``--reps``
iterations after ``--warmup`` (ours: compilation). Memory: each worker's peak RSS (VmHWM)
over its whole life, and over the timed iterations only (peak reset after warm-up).

Comparable: the model and its weights (TRL's own ``_get_per_token_logps_and_entropies`` on
our first rollout's completions matches our old log-probs: max |diff| printed), the prompts,
the shapes, the budget, the reward function, the loss definition, the optimizer. Not
comparable: the samples themselves (two samplers, two RNGs), hence the rewards and the
update's direction; only statistics can agree. The first-iteration loss is ~0 on both sides
(the policy ratio is 1 and each group's advantages sum to 0 over equal-length completions),
and the mean reward is ~0.5 on both (random ids); both are printed as the light check.

Usage:
  .venv/bin/python -m benchmarks.grpo_step [--reps 1] [--warmup 1] [--prompts 16]
      [--group 8] [--prompt-len 64] [--new-tokens 128] [--micro-batches 4]
      [--configs ours trl ours-remat trl-ckpt] [--out results/grpo_step.json]
A smoke run: --prompts 2 --new-tokens 8 --micro-batches 1 (about 2 minutes). The default
(two iterations per side at the full shapes) took 15 minutes on this 2-core CPU under load
(other jobs on 1-2 cores), over the ~10 minutes wanted: TRL's sampling alone is ~4 minutes an
iteration (less on a quiet machine; not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.common import machine_load
from benchmarks.grpo_step_workers import (PHASES, iteration_tokens, make_prompts, worker_ours,
                                          worker_trl)
from jaxalign.cli.main import CPU_SCHEDULER_FLAG

CONFIGS = ("ours", "trl", "ours-remat", "trl-ckpt")


def _spec(name, args, model, prompts_path, parity_path):
  return dict(name=name, worker=name.split("-")[0], model=model, prompts_path=prompts_path,
              parity_path=parity_path, warmup=args.warmup, reps=args.reps,
              prompts=args.prompts, group=args.group, prompt_len=args.prompt_len,
              new_tokens=args.new_tokens, micro_batches=args.micro_batches,
              threads=args.threads, remat=name == "ours-remat",
              gradient_checkpointing=name == "trl-ckpt")


def _run_child(spec, timeout, xla_flags):
  """Runs one worker in its own process; its JSON result, or the error and stderr tail."""
  with tempfile.TemporaryDirectory(prefix="grpo_step_") as tmp:
    result, log = os.path.join(tmp, "result.json"), os.path.join(tmp, "stderr.txt")
    env = dict(os.environ, HF_DATASETS_CACHE=os.path.join(tmp, "datasets"),
               TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error")
    if xla_flags and spec["worker"] == "ours":
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    cmd = [sys.executable, "-m", "benchmarks.grpo_step", "--worker", json.dumps(spec),
           "--result", result]
    t0 = time.perf_counter()
    with open(log, "w") as err:
      proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
      timer = threading.Timer(timeout, proc.kill)
      timer.start()
      for line in proc.stdout:  # the worker's progress lines
        if line.startswith("    "):
          print(line, end="", flush=True)
      rc = proc.wait()
      rc = rc if timer.is_alive() else f"timeout ({timeout}s)"
      timer.cancel()
    wall = time.perf_counter() - t0
    if rc == 0 and os.path.exists(result):
      with open(result) as f:
        return dict(json.load(f), child_wall_seconds=wall)
    with open(log) as f:
      tail = f.read()[-3000:]
    print(f"  {spec['name']} failed (rc {rc}):\n{tail}", flush=True)
    return {"error": f"rc {rc}", "stderr_tail": tail, "child_wall_seconds": wall}


def _row(name, r):
  if "error" in r:
    return f"{name:<11} failed: {r['error']}"
  tps = r["tokens_per_s"]
  phases = " ".join(f"{r[f'{p}_seconds']['median']:7.2f}" for p in PHASES)
  timed = r.get("peak_rss_timed_mb")
  loads = r["load_before_iterations"]
  return (f"{name:<11} {tps['median']:6.0f} ({tps['min']:4.0f}-{tps['max']:4.0f})"
          f" {r['iteration_seconds']['median']:7.2f} {phases}"
          f" {r['sample_new_tokens_per_s']['median']:8.0f}"
          f" {r['peak_rss_mb']:8.0f} {timed if timed is None else round(timed):>8}"
          f"   {min(loads):.2f}-{max(loads):.2f}")


def _ratio(results, ours, peer):
  a, b = results.get(ours, {}), results.get(peer, {})
  if "tokens_per_s" not in a or "tokens_per_s" not in b:
    return None
  return {"tokens_per_s": a["tokens_per_s"]["median"] / b["tokens_per_s"]["median"],
          "tokens_per_s_worst_case": a["tokens_per_s"]["min"] / b["tokens_per_s"]["max"],
          "peak_rss": a["peak_rss_mb"] / b["peak_rss_mb"],
          **{f"{p}_speedup": b[f"{p}_seconds"]["median"] / a[f"{p}_seconds"]["median"]
             for p in PHASES}}


def _print_checks(results):
  for name, r in results.items():
    if "records" not in r:
      continue
    first, later = r["records"][0], r["records"][1:]
    line = (f"  {name}: first-iteration loss {first['loss']:+.2e}, mean reward "
            f"{first['reward_mean']:.3f} (later: "
            + ", ".join(f"{x['reward_mean']:.3f}" for x in later) + "), mean length "
            f"{first['mean_length']:.0f}")
    if "logps_max_abs_diff_vs_ours" in r:
      line += (f"; TRL's log-probs of our first rollout: max |diff| "
               f"{r['logps_max_abs_diff_vs_ours']:.1e}")
    print(line)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--reps", type=int, default=1, help="timed iterations per config")
  parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first (>= 1)")
  parser.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
  parser.add_argument("--group", type=int, default=8, help="G samples per prompt")
  parser.add_argument("--prompt-len", type=int, default=64)
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--micro-batches", type=int, default=4,
                      help="gradient accumulation on both sides, one optimizer step per "
                      "iteration (1: one pass on all samples, ~13 GiB per side)")
  parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=["ours", "trl"])
  parser.add_argument("--threads", type=int, default=2, help="torch threads")
  parser.add_argument("--timeout", type=int, default=3600, help="per child, seconds")
  parser.add_argument("--ours-xla-flags", default=CPU_SCHEDULER_FLAG,
                      help="XLA_FLAGS for our workers (default: the memory-optimised CPU "
                      "scheduler that `jaxalign` sets; '' for XLA's default)")
  parser.add_argument("--out", default="results/grpo_step.json")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--result", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    spec = json.loads(args.worker)
    out = {"ours": worker_ours, "trl": worker_trl}[spec["worker"]](spec)
    with open(args.result, "w") as f:
      json.dump(out, f)
    return
  if args.warmup < 1:
    parser.error("--warmup must be at least 1 (the first iteration compiles)")
  if (args.prompts * args.group) % args.micro_batches:
    parser.error("--micro-batches must divide prompts x group")
  if "ours" not in args.configs:
    args.configs.insert(0, "ours")  # TRL's log-prob check reads our first rollout

  from benchmarks.common import build_peer_model, save_word_tokenizer
  header = {"cores": os.cpu_count(), "load_before_start": machine_load(),
            "loadavg": os.getloadavg(), "python": sys.version.split()[0]}
  tokens = iteration_tokens(vars(args))
  print(f"GRPO iteration, GPT-2 8x512, vocab 8192, {args.prompts} prompts x G={args.group}, "
        f"prompt {args.prompt_len} + {args.new_tokens} new tokens = {tokens} tokens/iteration, "
        f"f32; {os.cpu_count()} cores, load before start {header['load_before_start']:.2f} "
        f"busy cores", flush=True)
  model, path = build_peer_model("gpt2")
  save_word_tokenizer(path, model.config.vocab_size, model.config.eos_token_id)
  prompts_path, parity_path = os.path.join(path, "prompts.npy"), os.path.join(path, "parity.npz")
  make_prompts(prompts_path, args.prompts * (args.warmup + args.reps), args.prompt_len,
               model.config.vocab_size, model.config.eos_token_id)
  del model

  results = {}
  for name in args.configs:
    print(f"{name} ...", flush=True)
    results[name] = _run_child(_spec(name, args, path, prompts_path, parity_path),
                               args.timeout, args.ours_xla_flags)

  print()
  print(f"{'config':<11} {'tokens/s (min-max)':>18} {'s/iter':>7} {'sample':>7} {'score':>7} "
        f"{'update':>7} {'new tok/s':>8} {'peakRSS':>8} {'timedRSS':>8}   load before")
  for name in args.configs:
    print(_row(name, results[name]))
  print(f"(medians over {args.reps} iterations after {args.warmup} warm-up; tokens/s = "
        f"{tokens} prompt + completion tokens / s per iteration; new tok/s = sampling only; "
        "RSS in MiB: whole worker, and during the timed iterations only)")
  print("checks:")
  _print_checks(results)
  ratios = {f"{ours} / {peer}": _ratio(results, ours, peer)
            for ours in ("ours", "ours-remat") for peer in ("trl", "trl-ckpt")
            if ours in results and peer in results}
  for label, ratio in ratios.items():
    if ratio:
      print(f"ratio {label}: {ratio['tokens_per_s']:.2f}x tokens/s (worst case "
            f"{ratio['tokens_per_s_worst_case']:.2f}x; sampling {ratio['sample_speedup']:.2f}x,"
            f" scoring {ratio['score_speedup']:.2f}x, update {ratio['update_speedup']:.2f}x)"
            f" at {ratio['peak_rss']:.2f}x peak RSS")
  header["load_after"] = machine_load()
  print(f"load after: {header['load_after']:.2f} busy cores")
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
      json.dump({"header": header, "args": vars(args), "results": results, "ratios": ratios},
                f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()

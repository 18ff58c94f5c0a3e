"""DPO training-step throughput: jaxalign's jitted step against TRL's DPOTrainer.

Model: the GPT-2-style benchmark shape (8 layers, width 512, 8 heads, vocab 8192, tied
embeddings; random weights built in transformers, loaded into jaxalign with load_pretrained, so
both sides start from the same weights). Data: 8 pairs per step, each row 128 prompt + 128
response tokens (random ids below the EOS id, response = 127 ids + EOS, no padding), so one
step sees 2 * 8 * 256 = 4096 tokens; every step takes the next 8 pairs, in the same order on
both sides. f32; DPO sigmoid loss, beta 0.1, summed response log-probs; AdamW lr 1e-5,
betas (0.9, 0.999), eps 1e-8, no weight decay, global-norm clip 1.0; no dropout.

--mix: a realistic length mix instead (prompts uniform in 32-256 tokens, each response in
16-256, EOS included): our rows are right-padded to the batch's bucket (16, 32, 64, ...) as
the data pipeline pads them, TRL's collator pads to the batch's widest row; tokens/s counts
real tokens only (2 prompts + 2 responses per pair), on both sides.

Our workers lay pairs out as the library does by default (data.shared_prompt: one row
[prompt | chosen | rejected], the prompt run once, the LM head on response tokens only);
the -tworow configurations run the padded two-row layout, for the layout's own gain.

Configurations (each in its own subprocess, so its peak RSS is its own; the parent collects
their JSON, prints the table and the ratios, and writes results/dpo_step.json):
  ours-ref            reference forward inside the step (state.ref_params)
  ours-cached         reference log-probs precomputed once (reference_logps_fn) and carried in
                      the batch; the state has no ref_params
  ours-cached-tworow, ours-ref-tworow   the same in the two-row layout (ref: not by default)
  ours-ref-remat, ours-cached-remat   the same with config.replace(remat=True)
  trl-ref             DPOTrainer with a separate ref_model (gradient_checkpointing off)
  trl-cached          DPOTrainer with precompute_ref_log_probs=True (no ref model kept)
  trl-ref-ckpt        DPOTrainer with gradient_checkpointing=True (TRL's default; --trl-ckpt)
  profile             matmul ceiling, where our step's time goes, XLA's FLOP count

Timing: per configuration, --warmup steps first (compilation; ours also compiles each
other batch shape the timed steps will see, on a throw-away copy of the state, and reports
the time), then --reps repetitions of
--steps steps each; a repetition's time covers its steps end to end (jax.block_until_ready
after each of ours; TRL's from its first on_step_begin to its last on_step_end). Before each
repetition the machine's load (busy cores over 1 s, while the worker idles) is recorded.
Tokens/s = steps * 4096 / time; the table gives the median with min and max.
Model FLOPs per step (nominal, as the peer harness counts them): 6 * N * tokens for the
policy's forward and backward, + 2 * N * tokens for a reference forward, N = all unique
parameters (29.9M); "% matmul" divides the achieved FLOP/s by a [2048,512]x[512,2048] f32
jnp.dot timed in the same run. Memory: the worker's peak RSS (VmHWM) over its whole life,
and over the timed steps only (peak reset after set-up, where the kernel allows it).

Usage:
  .venv/bin/python -m benchmarks.dpo_step [--reps 3] [--steps 2] [--warmup 1]
      [--only ours-ref trl-ref ...] [--trl-ckpt] [--rounds 1] [--mix] [--out PATH]
      [--ours-xla-flags "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"]
A quick check: --reps 1 --steps 1 (about 5 minutes quiet, 9 under load). A full run
(--reps 3 --steps 2) should take about 8 minutes on a quiet machine; load stretches it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.common import machine_load

from jaxalign.cli.main import CPU_SCHEDULER_FLAG
from benchmarks.dpo_step_workers import (B, BETA, CONFIGS, DEFAULT, LR, MATMUL, MIX_PROMPT,
                                         MIX_RESPONSE, PROMPT, RESPONSE, TOKENS_PER_STEP,
                                         _rep_stats, _stats, make_data, worker_ours,
                                         worker_profile, worker_trl)


def _spec(name, args, model, data):
  spec = dict(name=name, model=model, data=data, warmup=args.warmup, reps=args.reps,
              steps=args.steps, cached="cached" in name, remat="remat" in name,
              chunk_size=args.chunk_size, threads=args.threads,
              gradient_checkpointing="ckpt" in name,
              layout="two-row" if "tworow" in name else "shared")
  spec["worker"] = "profile" if name == "profile" else name.split("-")[0]
  return spec


def _run_child(spec, timeout, xla_flags=None):
  with tempfile.TemporaryDirectory(prefix="dpo_step_") as tmp:
    result, log = os.path.join(tmp, "result.json"), os.path.join(tmp, "stderr.txt")
    env = dict(os.environ, HF_DATASETS_CACHE=os.path.join(tmp, "datasets"),
               TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error")
    if xla_flags and spec["worker"] != "trl":
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    cmd = [sys.executable, "-m", "benchmarks.dpo_step", "--worker", json.dumps(spec),
           "--result", result]
    t0 = time.perf_counter()
    with open(log, "w") as err:
      # the worker's own progress lines ("    rep ...") are shown; library chatter is not
      proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
      timer = threading.Timer(timeout, proc.kill)
      timer.start()
      for line in proc.stdout:
        if line.startswith("    "):
          print(line, end="", flush=True)
      rc = proc.wait()
      rc = rc if timer.is_alive() else f"timeout ({timeout}s)"
      timer.cancel()
    wall = time.perf_counter() - t0
    if rc == 0 and os.path.exists(result):
      with open(result) as f:
        out = json.load(f)
      out["child_wall_seconds"] = wall
      return out
    with open(log) as f:
      tail = f.read()[-3000:]
    print(f"  {spec['name']} failed (rc {rc}):\n{tail}", flush=True)
    return {"error": f"rc {rc}", "stderr_tail": tail, "child_wall_seconds": wall}


def _merge(runs):
  """Pools the repetitions of one configuration over rounds."""
  ok = [r for r in runs if "error" not in r]
  if not ok:
    return runs[-1]
  if len(ok) == 1:
    return ok[0]
  merged = dict(ok[-1])
  for key in ("rep_seconds", "load_before_reps", "rep_tokens"):
    merged[key] = [x for r in ok for x in r[key]]
  merged.update(_rep_stats(merged["rep_seconds"], merged["steps_per_rep"],
                           merged["rep_tokens"]))
  merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
  merged["rounds"] = len(ok)
  return merged


def _row(name, r, matmul_flops):
  if "error" in r:
    return f"{name:<18} failed: {r['error']}"
  tps, sps = r["tokens_per_s"], r["seconds_per_step"]
  achieved = r["flops_per_step"] / sps["median"]
  frac = f"{100 * achieved / matmul_flops:5.1f}%" if matmul_flops else "   n/a"
  loads = r["load_before_reps"]
  timed = r.get("peak_rss_timed_steps_mb")
  return (f"{name:<18} {tps['median']:7.0f} ({tps['min']:5.0f}-{tps['max']:5.0f})"
          f" {sps['median']:7.3f} {achieved / 1e9:7.1f} {frac}"
          f" {r['peak_rss_mb']:8.0f} {timed if timed is None else round(timed):>8}"
          f"   {min(loads):.2f}-{max(loads):.2f}")


def _ratio(results, ours, peer):
  a, b = results.get(ours, {}), results.get(peer, {})
  if "tokens_per_s" not in a or "tokens_per_s" not in b:
    return None
  return {"tokens_per_s": a["tokens_per_s"]["median"] / b["tokens_per_s"]["median"],
          "tokens_per_s_worst_case": a["tokens_per_s"]["min"] / b["tokens_per_s"]["max"],
          "peak_rss": a["peak_rss_mb"] / b["peak_rss_mb"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--reps", type=int, default=3, help="timed repetitions per config")
  parser.add_argument("--steps", type=int, default=2, help="steps per repetition")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1)")
  parser.add_argument("--only", nargs="+", choices=CONFIGS, help="run only these configs")
  parser.add_argument("--trl-ckpt", action="store_true",
                      help="also run TRL with gradient checkpointing (its default)")
  parser.add_argument("--rounds", type=int, default=1,
                      help="run the whole alternating sequence this many times; pools reps")
  parser.add_argument("--chunk-size", type=int, default=128, help="our LM-head chunk size")
  parser.add_argument("--threads", type=int, default=2, help="torch threads")
  parser.add_argument("--timeout", type=int, default=900, help="per child, seconds")
  parser.add_argument("--ours-xla-flags", default=CPU_SCHEDULER_FLAG,
                      help="XLA_FLAGS for our workers only (default: the memory-optimised "
                      "CPU scheduler that `jaxalign` sets; '' for XLA's default)")
  parser.add_argument("--mix", action="store_true",
                      help="a realistic length mix: prompts 32-256, responses 16-256 tokens")
  parser.add_argument("--out", default=None,
                      help="default results/dpo_step.json (--mix: results/dpo_step_mix.json)")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--result", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    spec = json.loads(args.worker)
    fn = {"ours": worker_ours, "trl": worker_trl, "profile": worker_profile}[spec["worker"]]
    out = fn(spec)
    with open(args.result, "w") as f:
      json.dump(out, f)
    return
  if args.warmup < 1:
    parser.error("--warmup must be at least 1 (the first step compiles)")
  args.out = args.out or f"results/dpo_step{'_mix' if args.mix else ''}.json"

  from benchmarks.common import build_peer_model, save_word_tokenizer
  names = list(args.only or DEFAULT)
  if args.mix and "profile" in names:  # the profile breaks down the fixed shape only
    names.remove("profile")
  if args.trl_ckpt and "trl-ref-ckpt" not in names:
    names.insert(names.index("profile") if "profile" in names else len(names), "trl-ref-ckpt")
  header = {"cores": os.cpu_count(), "load_before_start": machine_load(),
            "loadavg": os.getloadavg(), "python": sys.version.split()[0]}
  shape = (f"{B} pairs x (prompt {MIX_PROMPT[0]}-{MIX_PROMPT[1]} + responses "
           f"{MIX_RESPONSE[0]}-{MIX_RESPONSE[1]}) tokens, uniform" if args.mix else
           f"{B} pairs x ({PROMPT} + {RESPONSE}) tokens = {TOKENS_PER_STEP} tokens/step")
  print(f"DPO step, GPT-2 8x512, vocab 8192, {shape}, f32; {os.cpu_count()} cores, load "
        f"before start {header['load_before_start']:.2f} busy cores", flush=True)
  model, path = build_peer_model("gpt2")
  save_word_tokenizer(path, model.config.vocab_size, model.config.eos_token_id)
  data = os.path.join(path, "pairs.npz")
  make_data(data, B * (args.warmup + args.reps * args.steps), model.config.vocab_size,
            model.config.eos_token_id, mix=args.mix)
  del model

  runs = {name: [] for name in names}
  for rnd in range(args.rounds):
    for name in names:
      print(f"[round {rnd}] {name} ...", flush=True)
      runs[name].append(_run_child(_spec(name, args, path, data), args.timeout,
                                   args.ours_xla_flags))
  results = {name: _merge(r) if name != "profile" else r[-1] for name, r in runs.items()}

  profile = results.get("profile", {})
  # the ceiling: every jnp.dot timing of this run (each of our workers and the profile)
  mm_seconds = [t for r in sum(runs.values(), []) for t in r.get("matmul_seconds", [])]
  matmul = _stats([2 * MATMUL[0] * MATMUL[1] * MATMUL[2] / t for t in mm_seconds]) \
      if mm_seconds else None
  matmul_flops = matmul["median"] if matmul else None
  print()
  print(f"{'config':<18} {'tokens/s (min-max)':>21} {'s/step':>7} {'GFLOP/s':>7} "
        f"{'%matmul':>6} {'peakRSS':>8} {'timedRSS':>8}   load before reps")
  for name in names:
    if name != "profile":
      print(_row(name, results[name], matmul_flops))
  print("(tokens/s: real tokens, 2 prompts + 2 responses per pair, median over reps; "
        "GFLOP/s = nominal model FLOPs over those tokens (6N per token, +2N with "
        "a reference forward) / median s/step; %matmul against a "
        f"{MATMUL[0]}x{MATMUL[1]}x{MATMUL[2]} f32 jnp.dot; RSS in MiB: whole worker, and "
        "during the timed steps only)")
  if matmul_flops:
    tm = results.get("trl-ref", {}).get("torch_matmul_gflops")
    print(f"matmul ceiling: jnp.dot {matmul_flops / 1e9:.1f} GFLOP/s (median of "
          f"{matmul['n']}, min {matmul['min'] / 1e9:.1f}, max {matmul['max'] / 1e9:.1f})"
          + (f"; torch.matmul in the TRL worker {tm['median']:.1f} GFLOP/s" if tm else ""))
  rss = {n: r["rss_after_imports_mb"] for n, r in results.items() if "rss_after_imports_mb" in r}
  if rss:
    print("RSS after imports (MiB, included in the peaks): "
          + ", ".join(f"{n} {v:.0f}" for n, v in rss.items()))
  for name in ("ours-cached", "trl-cached"):
    r = results.get(name, {})
    if "precompute_ref_seconds_incl_compile" in r:
      print(f"{name}: reference precompute over {len(r['rep_seconds']) * args.steps + args.warmup}"
            f" batches {r['precompute_ref_seconds_incl_compile']:.2f}s incl. compile")
    elif "trainer_init_seconds" in r:
      print(f"{name}: DPOTrainer init (tokenising + reference precompute) "
            f"{r['trainer_init_seconds']:.2f}s")

  compiled = {n: r for n, r in results.items() if "compiled_shapes" in r}
  if compiled:
    print("our warm-up (untimed; each distinct batch shape compiled once, as a long run "
          "does): " + ", ".join(f"{n} {r['compiled_shapes']} shapes "
                                f"{r['warmup_seconds_incl_compile']:.1f}s"
                                for n, r in compiled.items()))

  losses = {n: results[n].get("losses") for n in ("ours-ref", "trl-ref") if n in results}
  if len(losses) == 2 and all(losses.values()):
    pairs = [(a, b) for a, b in zip(*losses.values()) if a is not None and b is not None]
    print("loss check ours-ref vs trl-ref (same data, same order): "
          + ", ".join(f"{a:.6f}/{b:.6f}" for a, b in pairs[:4]))

  if "breakdown_seconds" in profile:
    print("\nwhere our time goes ([16, 256] tokens; median s over reps):")
    for label, s in profile["breakdown_seconds"].items():
      print(f"  {label:<66} {s['median']:7.3f}  (min {s['min']:.3f}, max {s['max']:.3f})")
    for name in ("ours-ref", "ours-cached"):
      if "seconds_per_step" in results.get(name, {}):
        print(f"  {'full step, ' + name:<66} {results[name]['seconds_per_step']['median']:7.3f}")
    for kind in ("cached", "ref"):
      xla, nominal = profile.get(f"xla_flops_step_{kind}"), profile[f"nominal_flops_step_{kind}"]
      if isinstance(xla, float):
        print(f"  XLA cost analysis, step ({kind}): {xla / 1e9:.0f} GFLOP vs nominal "
              f"{nominal / 1e9:.0f} GFLOP (XLA counts the chunked LM head's loop body once);"
              f" XLA temporaries {profile[f'xla_temp_mib_step_{kind}']:.0f} MiB")

  ratios = {
      "ours-ref / trl-ref": _ratio(results, "ours-ref", "trl-ref"),
      "ours-cached / trl-cached": _ratio(results, "ours-cached", "trl-cached"),
      "ours-cached / trl-ref": _ratio(results, "ours-cached", "trl-ref"),
      "ours-ref-remat / trl-ref": _ratio(results, "ours-ref-remat", "trl-ref"),
      "ours-ref-remat / trl-ref-ckpt": _ratio(results, "ours-ref-remat", "trl-ref-ckpt"),
      "ours-cached-remat / trl-cached": _ratio(results, "ours-cached-remat", "trl-cached"),
      "ours-cached / ours-cached-tworow": _ratio(results, "ours-cached", "ours-cached-tworow"),
      "ours-ref / ours-ref-tworow": _ratio(results, "ours-ref", "ours-ref-tworow"),
  }
  ratios = {k: v for k, v in ratios.items() if v}
  print("\nratios (tokens/s: median / median, and worst case min / max; peak RSS ours / TRL):")
  for k, v in ratios.items():
    print(f"  {k:<32} {v['tokens_per_s']:5.2f}x (worst {v['tokens_per_s_worst_case']:.2f}x),"
          f" peak RSS {v['peak_rss']:.2f}x")
  target = {}
  for key, need in (("ours-cached / trl-cached", 2.5), ("ours-ref / trl-ref", 2.5)):
    if key in ratios:
      ok = ratios[key]["tokens_per_s"] >= need and ratios[key]["peak_rss"] <= 1.0
      target[key] = {"needed_speedup": need, "met": ok, **ratios[key]}
      print(f"  target {key}: >= {need}x at <= 1.0x memory: {'MET' if ok else 'NOT met'}")

  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"setup": {"pairs": B, "prompt": MIX_PROMPT if args.mix else PROMPT,
                         "response": MIX_RESPONSE if args.mix else RESPONSE,
                         "tokens_per_step": TOKENS_PER_STEP, "beta": BETA, "lr": LR,
                         "dtype": "float32", "warmup": args.warmup, "reps": args.reps,
                         "steps_per_rep": args.steps, "rounds": args.rounds,
                         "chunk_size": args.chunk_size, "torch_threads": args.threads,
                         "ours_xla_flags": args.ours_xla_flags or os.environ.get("XLA_FLAGS")},
               "machine": header, "matmul_flops_per_s": matmul, "results": results,
               "ratios": ratios, "targets": target},
              f, indent=1)
  print(f"wrote {args.out}")
  shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
  main()

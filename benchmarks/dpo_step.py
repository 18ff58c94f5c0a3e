"""DPO training-step throughput: jaxalign's jitted step against TRL's DPOTrainer.

Model: the GPT-2-style benchmark shape (8 layers, width 512, 8 heads, vocab 8192, tied
embeddings; random weights built in transformers, loaded into jaxalign with load_pretrained, so
both sides start from the same weights). Data: 8 pairs per step, each row 128 prompt + 128
response tokens (random ids below the EOS id, response = 127 ids + EOS, no padding), so one
step sees 2 * 8 * 256 = 4096 tokens; every step takes the next 8 pairs, in the same order on
both sides. f32; DPO sigmoid loss, beta 0.1, summed response log-probs; AdamW lr 1e-5,
betas (0.9, 0.999), eps 1e-8, no weight decay, global-norm clip 1.0; no dropout.

Configurations (each in its own subprocess, so its peak RSS is its own; the parent collects
their JSON, prints the table and the ratios, and writes results/dpo_step.json):
  ours-ref            reference forward inside the step (state.ref_params)
  ours-cached         reference log-probs precomputed once (reference_logps_fn) and carried in
                      the batch; the state has no ref_params
  ours-ref-remat, ours-cached-remat   the same with config.replace(remat=True)
  trl-ref             DPOTrainer with a separate ref_model (gradient_checkpointing off)
  trl-cached          DPOTrainer with precompute_ref_log_probs=True (no ref model kept)
  trl-ref-ckpt        DPOTrainer with gradient_checkpointing=True (TRL's default; --trl-ckpt)
  profile             matmul ceiling, where our step's time goes, XLA's FLOP count

Timing: per configuration, --warmup steps first (compilation), then --reps repetitions of
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
      [--only ours-ref trl-ref ...] [--trl-ckpt] [--rounds 1] [--out results/dpo_step.json]
      [--ours-xla-flags "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"]
A quick check: --reps 1 --steps 1 (about 5 minutes quiet, 9 under load). A full run
(--reps 3 --steps 2) should take about 8 minutes on a quiet machine; load stretches it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.common import machine_load, reset_peak_rss, rss_mb

B, PROMPT, RESPONSE = 8, 128, 128
T = PROMPT + RESPONSE
TOKENS_PER_STEP = 2 * B * T
BETA, LR = 0.1, 1e-5
MATMUL = (2048, 512, 2048)
CONFIGS = ("ours-ref", "trl-ref", "ours-cached", "trl-cached", "ours-ref-remat",
           "ours-cached-remat", "trl-ref-ckpt", "profile")
DEFAULT = tuple(c for c in CONFIGS if c != "trl-ref-ckpt")


def _stats(xs):
  xs = list(xs)
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
          "all": xs}


def _rep_stats(rep_seconds, steps):
  return {"seconds_per_step": _stats([t / steps for t in rep_seconds]),
          "tokens_per_s": _stats([steps * TOKENS_PER_STEP / t for t in rep_seconds])}


# ---------------------------------------------------------------- data (shared by both sides)

def make_data(path, n_pairs, vocab_size, eos_id, seed=4):
  """prompt [n, 128], chosen / rejected [n, 128] (127 random ids + EOS), ids below EOS."""
  import numpy as np
  rng = np.random.default_rng(seed)
  prompt = rng.integers(0, vocab_size - 1, (n_pairs, PROMPT), dtype=np.int32)
  chosen = rng.integers(0, vocab_size - 1, (n_pairs, RESPONSE), dtype=np.int32)
  rejected = rng.integers(0, vocab_size - 1, (n_pairs, RESPONSE), dtype=np.int32)
  assert eos_id == vocab_size - 1
  chosen[:, -1] = eos_id
  rejected[:, -1] = eos_id
  np.savez(path, prompt=prompt, chosen=chosen, rejected=rejected)


def _load_data(path):
  import numpy as np
  d = np.load(path)
  return d["prompt"], d["chosen"], d["rejected"]


def _our_batches(data, n_steps):
  """Our batch dicts (int32 [8, 256]; loss mask on the 128 response columns), on device."""
  import jax
  import numpy as np
  prompt, chosen, rejected = data
  loss_mask = np.zeros((B, T), np.int32)
  loss_mask[:, PROMPT:] = 1
  batches = []
  for s in range(n_steps):
    rows = slice(s * B, (s + 1) * B)
    batch = {}
    for name, resp in (("chosen", chosen), ("rejected", rejected)):
      batch[f"{name}_tokens"] = np.concatenate([prompt[rows], resp[rows]], axis=1)
      batch[f"{name}_attention_mask"] = np.ones((B, T), np.int32)
      batch[f"{name}_loss_mask"] = loss_mask
    batches.append(jax.device_put(batch))
  return batches


# ---------------------------------------------------------------- our side

def _setup_ours(spec):
  from jaxalign.models import load_pretrained
  from jaxalign.training.objectives import PreferenceObjective
  from jaxalign.training.optim import OptimizerConfig, make_optimizer
  from jaxalign.training.preference_losses import preference_loss
  config, params = load_pretrained(spec["model"])
  if spec.get("remat"):
    config = config.replace(remat=True)
  loss = preference_loss("dpo", beta=BETA)
  objective = PreferenceObjective(config, loss.loss_term, average_logps=loss.average_logps,
                                  needs_reference=True, chunk_size=spec.get("chunk_size", 128))
  tx = make_optimizer(OptimizerConfig(learning_rate=LR, weight_decay=0.0, b1=0.9, b2=0.999,
                                      eps=1e-8, grad_clip=1.0))
  return config, params, objective, tx


def worker_ours(spec):
  import jax
  import jax.numpy as jnp
  from jaxalign.training.objectives import reference_logps_fn
  from jaxalign.training.state import TrainState
  from jaxalign.training.step import make_train_step

  out = {"rss_after_imports_mb": rss_mb()["rss"]}
  config, params, objective, tx = _setup_ours(spec)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  warmup, reps, steps = spec["warmup"], spec["reps"], spec["steps"]
  batches = _our_batches(_load_data(spec["data"]), warmup + reps * steps)
  t0 = time.perf_counter()
  if spec["cached"]:
    ref_fn = reference_logps_fn(objective)
    for i, batch in enumerate(batches):
      chosen, rejected = ref_fn(params, batch)
      batches[i] = dict(batch, ref_chosen_logps=chosen, ref_rejected_logps=rejected)
    jax.block_until_ready(batches)
    out["precompute_ref_seconds_incl_compile"] = time.perf_counter() - t0
    state = TrainState.create(params, tx, seed=0)  # no ref_params
  else:
    ref_params = jax.tree_util.tree_map(jnp.copy, params)  # a frozen copy, as TRL's ref_model
    state = TrainState.create(params, tx, seed=0, ref_params=ref_params)
  del params
  step = make_train_step(objective)

  losses = []
  t0 = time.perf_counter()
  for i in range(warmup):
    state, metrics = step(state, batches[i])
    losses.append(float(jax.block_until_ready(metrics["loss"])))
  out["warmup_seconds_incl_compile"] = time.perf_counter() - t0
  out["matmul_seconds"] = _matmul_seconds()
  setup_peak = rss_mb()["peak"]
  out["peak_reset"] = reset_peak_rss()
  loads, reps_s = [], []
  for r in range(reps):
    loads.append(machine_load(1.0))
    t0 = time.perf_counter()
    for s in range(steps):
      state, metrics = step(state, batches[warmup + r * steps + s])
      jax.block_until_ready((state, metrics))
    reps_s.append(time.perf_counter() - t0)
    losses.extend([None] * (steps - 1) + [float(metrics["loss"])])
    print(f"    rep {r}: {reps_s[-1] / steps:.3f} s/step, load before {loads[-1]:.2f}",
          flush=True)
  mem = rss_mb()
  out.update(_rep_stats(reps_s, steps), rep_seconds=reps_s, load_before_reps=loads,
             steps_per_rep=steps,
             losses=losses, n_params=n_params, flops_per_step=(8 if not spec["cached"] else 6)
             * n_params * TOKENS_PER_STEP,
             peak_rss_mb=max(setup_peak, mem["peak"]),
             peak_rss_timed_steps_mb=mem["peak"] if out["peak_reset"] else None,
             rss_end_mb=mem["rss"], jax=jax.__version__, platform=jax.devices()[0].platform)
  return out


def _time(fn, reps):
  """(median, min, max) seconds of fn() after one warm-up call (fn blocks itself)."""
  fn()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return _stats(times)


def _matmul_seconds(reps=5):
  """Seconds of a [2048,512]x[512,2048] f32 jnp.dot (the machine's ceiling), reps times."""
  import jax
  import jax.numpy as jnp
  m, k, n = MATMUL
  x = jax.random.normal(jax.random.key(0), (m, k))
  y = jax.random.normal(jax.random.key(1), (k, n))
  dot = jax.jit(jnp.dot)
  return _time(lambda: jax.block_until_ready(dot(x, y)), reps)["all"]


def _cost(jitted, *args):
  """XLA's FLOP count and temporary-buffer size (MiB) of the compiled program."""
  try:
    compiled = jitted.lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
    return float(cost.get("flops", float("nan"))), temp
  except Exception as e:  # cost analysis is best effort
    return f"unavailable: {type(e).__name__}: {e}", None


def worker_profile(spec):
  """Matmul ceiling and a breakdown of our step on [16, 256]: reference / policy forward,
  backbone vs LM head, loss+backward, optimizer update; XLA's FLOP count for the steps."""
  import jax
  import jax.numpy as jnp
  from jaxalign.models import Transformer
  from jaxalign.training.forward import concat_pairs, hidden_token_logprobs, lm_head_weight
  from jaxalign.training.objectives import reference_logps_fn
  from jaxalign.training.state import TrainState
  from jaxalign.training.step import make_train_step

  reps = max(spec["reps"], 2)
  block = jax.block_until_ready
  out = {}
  out["matmul_seconds"] = _matmul_seconds()

  config, params, objective, tx = _setup_ours(spec)
  batch = _our_batches(_load_data(spec["data"]), 1)[0]
  ref_fn = reference_logps_fn(objective)
  chosen, rejected = ref_fn(params, batch)
  cached = dict(batch, ref_chosen_logps=chosen, ref_rejected_logps=rejected)
  tokens = concat_pairs(batch["chosen_tokens"], batch["rejected_tokens"])  # [16, 256]
  attention = jnp.ones_like(tokens)
  mask = concat_pairs(batch["chosen_loss_mask"], batch["rejected_loss_mask"])
  rows = {}

  rows["reference / policy forward (log-probs, no grad)"] = _time(
      lambda: block(ref_fn(params, batch)), reps)
  backbone = jax.jit(lambda p, t, a: Transformer(config, output="hidden").apply(
      {"params": p}, t, attention_mask=a))
  hidden = backbone(params, tokens, attention)
  rows["  backbone forward (no LM head)"] = _time(
      lambda: block(backbone(params, tokens, attention)), reps)
  cotangent = jax.random.normal(jax.random.key(2), hidden.shape)
  backbone_grad = jax.jit(jax.grad(lambda p: jnp.vdot(backbone(p, tokens, attention),
                                                      cotangent)))
  rows["backbone forward+backward"] = _time(lambda: block(backbone_grad(params)), reps)
  weight = lm_head_weight(config, params)

  def head_loss(h, w, chunk, rows_from=0):
    logps = hidden_token_logprobs(h[:, rows_from:-1], w, tokens[:, rows_from + 1:],
                                  chunk_size=chunk)
    return jnp.sum(logps * mask[:, rows_from + 1:])
  for label, chunk, start in (("LM head + log-softmax fwd+bwd, 255 positions, chunk 128", 128, 0),
                              ("LM head + log-softmax fwd+bwd, 255 positions, no chunking",
                               None, 0),
                              ("LM head + log-softmax fwd+bwd, 128 response positions only",
                               None, PROMPT - 1)):
    fn = jax.jit(jax.grad(lambda h, w, c=chunk, s=start: head_loss(h, w, c, s), argnums=(0, 1)))
    rows[label] = _time(lambda fn=fn: block(fn(hidden, weight)), reps)

  grad_fn = jax.jit(lambda p, b: jax.value_and_grad(objective.loss, has_aux=True)(
      p, None, b, objective.denominators(b)))
  rows["policy loss forward+backward (cached ref, = step minus optimizer)"] = _time(
      lambda: block(grad_fn(params, cached)), reps)
  grads = grad_fn(params, cached)[1]
  state = TrainState.create(jax.tree_util.tree_map(jnp.copy, params), tx, seed=0)
  update = jax.jit(lambda s, g: s.apply_gradients(g), donate_argnums=(0,))
  holder = [state]

  def run_update():
    holder[0] = block(update(holder[0], grads))
  rows["optimizer (clip + AdamW update)"] = _time(run_update, reps)
  out["breakdown_seconds"] = rows

  # XLA's own FLOP count for the two steps (includes the attention scores, the LM head on
  # every position and the chunked LM head's recomputation)
  step = make_train_step(objective, donate=False)
  out["xla_flops_step_cached"], out["xla_temp_mib_step_cached"] = _cost(step, holder[0], cached)
  ref_state = holder[0].replace(ref_params=params)
  out["xla_flops_step_ref"], out["xla_temp_mib_step_ref"] = _cost(step, ref_state, batch)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  out["nominal_flops_step_cached"] = 6 * n_params * TOKENS_PER_STEP
  out["nominal_flops_step_ref"] = 8 * n_params * TOKENS_PER_STEP
  return out


# ---------------------------------------------------------------- TRL's side

def worker_trl(spec):
  import torch
  torch.set_num_threads(spec["threads"])
  import transformers
  import trl
  from datasets import Dataset
  from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
  from trl import DPOConfig, DPOTrainer

  out = {"rss_after_imports_mb": rss_mb()["rss"], "torch": torch.__version__,
         "transformers": transformers.__version__, "trl": trl.__version__,
         "torch_threads": torch.get_num_threads()}
  a, b = torch.randn(*MATMUL[:2]), torch.randn(*MATMUL[1:])
  mm = _time(lambda: a @ b, 5)
  out["torch_matmul_gflops"] = _stats([2 * MATMUL[0] * MATMUL[1] * MATMUL[2] / t / 1e9
                                       for t in mm["all"]])
  warmup, reps, steps = spec["warmup"], spec["reps"], spec["steps"]
  n_steps = warmup + reps * steps
  prompt, chosen, rejected = (x[:n_steps * B] for x in _load_data(spec["data"]))
  tok = AutoTokenizer.from_pretrained(spec["model"])
  text = lambda row: " ".join(f"t{int(i)}" for i in row)
  # DPOTrainer appends EOS to each completion itself: the text drops our trailing EOS
  ds = Dataset.from_dict({"prompt": [text(r) for r in prompt],
                          "chosen": [" " + text(r[:-1]) for r in chosen],
                          "rejected": [" " + text(r[:-1]) for r in rejected]})
  cfg = DPOConfig(
      output_dir=tempfile.mkdtemp(prefix="dpo_step_trl_"), per_device_train_batch_size=B,
      gradient_accumulation_steps=1, max_steps=n_steps, learning_rate=LR,
      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
      adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, optim="adamw_torch_fused",
      beta=BETA, loss_type=["sigmoid"], max_length=T,
      gradient_checkpointing=spec["gradient_checkpointing"], bf16=False, fp16=False,
      use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
      disable_tqdm=True, dataloader_num_workers=0, train_sampling_strategy="sequential",
      precompute_ref_log_probs=spec["cached"], disable_dropout=True, seed=0)
  load = lambda: AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
  policy = load()
  policy.config.use_cache = False
  ref = None
  if not spec["cached"]:
    ref = load()
    ref.config.use_cache = False

  class RepTimer(TrainerCallback):
    def __init__(self):
      self.begin, self.end, self.loads = [], [], []

    def on_step_begin(self, args, state, control, **kw):
      i = state.global_step
      if i == warmup:  # set-up, compilation of nothing, warm-up steps are done
        self.setup_peak = rss_mb()["peak"]
        self.peak_reset = reset_peak_rss()
      if i >= warmup and (i - warmup) % steps == 0:
        self.loads.append(machine_load(1.0))
      self.begin.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kw):
      self.end.append(time.perf_counter())

  timer = RepTimer()
  t0 = time.perf_counter()
  trainer = DPOTrainer(model=policy, ref_model=ref, args=cfg, train_dataset=ds,
                       processing_class=tok, callbacks=[timer])
  out["trainer_init_seconds"] = time.perf_counter() - t0  # includes the precompute pass
  tds = trainer.train_dataset
  for i in range(len(tds)):  # the tokenized data must be exactly our ids
    assert tds[i]["prompt_ids"] == prompt[i].tolist(), i
    assert tds[i]["chosen_ids"] == chosen[i].tolist(), i
    assert tds[i]["rejected_ids"] == rejected[i].tolist(), i
  collated = trainer.data_collator([tds[i] for i in range(B)])
  assert tuple(collated["input_ids"].shape) == (2 * B, T), collated["input_ids"].shape
  assert collated["completion_mask"].sum(1).tolist() == [RESPONSE] * (2 * B)

  losses = []
  inner_step = trainer.training_step

  def training_step(*args, **kwargs):  # records each step's loss (no logging needed)
    loss = inner_step(*args, **kwargs)
    losses.append(float(loss))
    return loss
  trainer.training_step = training_step
  t0 = time.perf_counter()
  trainer.train()
  out["train_seconds_total"] = time.perf_counter() - t0
  mem = rss_mb()
  reps_s, inner = [], []
  for r in range(reps):
    first, last = warmup + r * steps, warmup + (r + 1) * steps - 1
    reps_s.append(timer.end[last] - timer.begin[first])
    inner.append(sum(timer.end[i] - timer.begin[i] for i in range(first, last + 1)))
    print(f"    rep {r}: {reps_s[-1] / steps:.3f} s/step, load before {timer.loads[r]:.2f}",
          flush=True)
  out.update(_rep_stats(reps_s, steps), rep_seconds=reps_s, steps_per_rep=steps,
             rep_seconds_step_begin_to_end_only=inner, load_before_reps=timer.loads,
             warmup_seconds=sum(timer.end[i] - timer.begin[i] for i in range(warmup)),
             losses=losses, n_params=sum(p.numel() for p in policy.parameters()),
             peak_reset=timer.peak_reset, peak_rss_mb=max(timer.setup_peak, mem["peak"]),
             peak_rss_timed_steps_mb=mem["peak"] if timer.peak_reset else None,
             rss_end_mb=mem["rss"])
  out["flops_per_step"] = (6 if spec["cached"] else 8) * out["n_params"] * TOKENS_PER_STEP
  return out


# ---------------------------------------------------------------- parent

def _spec(name, args, model, data):
  spec = dict(name=name, model=model, data=data, warmup=args.warmup, reps=args.reps,
              steps=args.steps, cached="cached" in name, remat="remat" in name,
              chunk_size=args.chunk_size, threads=args.threads,
              gradient_checkpointing="ckpt" in name)
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
  for key in ("rep_seconds", "load_before_reps"):
    merged[key] = [x for r in ok for x in r[key]]
  merged.update(_rep_stats(merged["rep_seconds"], merged["steps_per_rep"]))
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
  parser.add_argument("--ours-xla-flags", default="",
                      help="XLA_FLAGS for our workers only, e.g. "
                      "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED")
  parser.add_argument("--out", default="results/dpo_step.json")
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

  from benchmarks.common import build_peer_model, save_word_tokenizer
  names = list(args.only or DEFAULT)
  if args.trl_ckpt and "trl-ref-ckpt" not in names:
    names.insert(names.index("profile") if "profile" in names else len(names), "trl-ref-ckpt")
  header = {"cores": os.cpu_count(), "load_before_start": machine_load(),
            "loadavg": os.getloadavg(), "python": sys.version.split()[0]}
  print(f"DPO step, GPT-2 8x512, vocab 8192, {B} pairs x ({PROMPT} + {RESPONSE}) tokens = "
        f"{TOKENS_PER_STEP} tokens/step, f32; {os.cpu_count()} cores, load before start "
        f"{header['load_before_start']:.2f} busy cores", flush=True)
  model, path = build_peer_model("gpt2")
  save_word_tokenizer(path, model.config.vocab_size, model.config.eos_token_id)
  data = os.path.join(path, "pairs.npz")
  make_data(data, B * (args.warmup + args.reps * args.steps), model.config.vocab_size,
            model.config.eos_token_id)
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
  print("(tokens/s median over reps; GFLOP/s = nominal model FLOPs (6N per token, +2N with "
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
  }
  ratios = {k: v for k, v in ratios.items() if v}
  print("\nratios (tokens/s: median / median, and worst case min / max; peak RSS ours / TRL):")
  for k, v in ratios.items():
    print(f"  {k:<32} {v['tokens_per_s']:5.2f}x (worst {v['tokens_per_s_worst_case']:.2f}x),"
          f" peak RSS {v['peak_rss']:.2f}x")
  target = {}
  for key, need in (("ours-cached / trl-cached", 2.0), ("ours-ref / trl-ref", 1.5)):
    if key in ratios:
      ok = ratios[key]["tokens_per_s"] >= need and ratios[key]["peak_rss"] <= 1.0
      target[key] = {"needed_speedup": need, "met": ok, **ratios[key]}
      print(f"  target {key}: >= {need}x at <= 1.0x memory: {'MET' if ok else 'NOT met'}")

  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"setup": {"pairs": B, "prompt": PROMPT, "response": RESPONSE,
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

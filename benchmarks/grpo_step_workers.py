"""The worker processes of benchmarks/grpo_step.py: our GRPO iteration and TRL's GRPOTrainer on
the same shapes. Each runs in its own subprocess, so its peak RSS is its own (see grpo_step.py
for what is measured and what is comparable)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import types

from benchmarks.common import machine_load, reset_peak_rss, rss_mb

LR = 1e-6          # TRL's GRPOConfig default
CLIP = 0.2         # TRL's epsilon; ours clip_low = clip_high
PHASES = ("sample", "score", "update")


def _stats(xs):
  xs = list(xs)
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
          "all": xs}


def iteration_tokens(spec) -> int:
  """Prompt + completion tokens of one iteration's prompts x G samples."""
  return spec["prompts"] * spec["group"] * (spec["prompt_len"] + spec["new_tokens"])


# ---------------------------------------------------------------- data and reward (both sides)

def make_prompts(path, n_prompts, prompt_len, vocab_size, eos_id, seed=4):
  """Random prompt ids [n, prompt_len] below the EOS id (EOS is the last id)."""
  import numpy as np
  assert eos_id == vocab_size - 1
  rng = np.random.default_rng(seed)
  np.save(path, rng.integers(0, vocab_size - 1, (n_prompts, prompt_len), dtype=np.int32))


def hash_rewards(completion_ids):
  """A cheap reward that is a fixed function of the ids, the same on both sides: a position-
  weighted id sum mod 101, scaled to [0, 1]. float32 [B]."""
  import numpy as np
  ids = np.asarray(completion_ids, np.int64)  # [B, N]
  weights = np.arange(1, ids.shape[1] + 1)
  return ((ids * weights).sum(axis=1) % 101 / 100).astype(np.float32)


def _progress(i, times, note):
  print(f"    iteration {i}: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items())
        + f" ({note})", flush=True)


def _phase_stats(phases, spec):
  """Per-phase and whole-iteration seconds and tokens/s over the timed iterations."""
  total = [sum(p[name] for name in PHASES) for p in phases]
  tokens = iteration_tokens(spec)
  new_tokens = spec["prompts"] * spec["group"] * spec["new_tokens"]
  out = {"iteration_seconds": _stats(total),
         "tokens_per_s": _stats([tokens / t for t in total]),
         "sample_new_tokens_per_s": _stats([new_tokens / p["sample"] for p in phases])}
  for name in PHASES:
    out[f"{name}_seconds"] = _stats([p[name] for p in phases])
  return out


# ---------------------------------------------------------------- our side

def worker_ours(spec):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jaxalign import rewards as R
  from jaxalign.config import RunConfig, load_config
  from jaxalign.models import load_pretrained
  from jaxalign.training.grpo import grpo_update, make_group_experience
  from jaxalign.training.grpo_rewards import rollout_rewards
  from jaxalign.training.grpo_run import init_grpo_state
  from jaxalign.training.rollout import sample_rollout

  out = {"rss_after_imports_mb": rss_mb()["rss"], "jax": jax.__version__}
  config, policy = load_pretrained(spec["model"])
  config = config.replace(eos_token_id=None, remat=spec["remat"])  # the full budget per row
  P, G, N = spec["prompts"], spec["group"], spec["new_tokens"]
  run = load_config(RunConfig, None, [
      "task=grpo", f"grpo.prompts_per_iteration={P}", f"grpo.group_size={G}",
      f"grpo.max_new_tokens={N}", "grpo.aggregation=token_mean", "grpo.kl_coef=0.0",
      "grpo.num_iterations=1", "grpo.num_minibatches=1", f"grpo.clip_low={CLIP}",
      f"grpo.clip_high={CLIP}", "grpo.scale_rewards=group",
      f"loop.micro_batches={spec['micro_batches']}", f"optimizer.learning_rate={LR}",
      "optimizer.weight_decay=0.0", "optimizer.grad_clip=1.0"])
  grpo = run.grpo
  state = init_grpo_state(run, config, policy)
  del policy
  reward = R.combine({"hash": (1.0, R.ids_reward(
      lambda prompts, completions, *, completion_mask, **_: hash_rewards(
          np.asarray(completions) * np.asarray(completion_mask))))})
  prompt_ids = np.load(spec["prompts_path"])
  no_answers = types.SimpleNamespace()  # rollout_rewards reads .answer_tokens when present
  block = jax.block_until_ready

  def iterate(i):
    tokens = jnp.asarray(prompt_ids[i * P:(i + 1) * P])
    key = jax.random.PRNGKey(i)
    t0 = time.perf_counter()
    rollout = block(sample_rollout(config, state.params["policy"], tokens, jnp.ones_like(tokens),
                                   jax.random.fold_in(key, 0), max_new_tokens=N,
                                   temperature=grpo.temperature, eos_id=-1,
                                   num_samples=G))
    t1 = time.perf_counter()
    scored = rollout_rewards(reward, no_answers, rollout, group_size=G, eos_id=-1,
                             max_new_tokens=N)
    experience, metrics = block(make_group_experience(config, grpo, state.params, None, rollout,
                                                      jnp.asarray(scored.total)))
    t2 = time.perf_counter()
    new_state, history = grpo_update(config, grpo, state, experience,
                                     np.asarray(jax.random.fold_in(key, 1)),
                                     micro_batches=run.loop.micro_batches)
    block((new_state.params, history))
    t3 = time.perf_counter()
    record = {"loss": float(history[0]["grpo/loss"]),
              "ratio_mean": float(history[0]["grpo/ratio_mean"]),
              "reward_mean": float(metrics["rollout/reward"]),
              "mean_length": float(metrics["rollout/length"]),
              "logprob_mismatch": {k: float(v) for k, v in metrics.items()
                                   if "mismatch" in k}}
    return new_state, rollout, experience, {"sample": t1 - t0, "score": t2 - t1,
                                            "update": t3 - t2}, record

  warmup, reps = spec["warmup"], spec["reps"]
  records, phases, loads = [], [], []
  t0 = time.perf_counter()
  for i in range(warmup):
    state, rollout, experience, times, record = iterate(i)
    records.append(record)
    _progress(i, times, "warm-up")
    if i == 0:  # the completions TRL's worker scores for the log-prob check
      rows = min(8, rollout.sequence.shape[0])
      np.savez(spec["parity_path"], sequence=np.asarray(rollout.sequence[:rows]),
               old_logps=np.asarray(experience.old_logps[:rows]))
  out["warmup_seconds_incl_compile"] = time.perf_counter() - t0
  setup_peak = rss_mb()["peak"]
  out["peak_reset"] = reset_peak_rss()
  for i in range(warmup, warmup + reps):
    loads.append(machine_load(1.0))
    state, _, _, times, record = iterate(i)
    phases.append(times)
    records.append(record)
    _progress(i, times, f"load before {loads[-1]:.2f}")
  mem = rss_mb()
  out.update(_phase_stats(phases, spec), phases=phases, records=records,
             load_before_iterations=loads, peak_rss_mb=max(setup_peak, mem["peak"]),
             peak_rss_timed_mb=mem["peak"] if out["peak_reset"] else None,
             rss_end_mb=mem["rss"], platform=jax.devices()[0].platform)
  return out


# ---------------------------------------------------------------- TRL's side

def _trl_config(spec, output_dir):
  from trl import GRPOConfig
  P, G, N, m = spec["prompts"], spec["group"], spec["new_tokens"], spec["micro_batches"]
  return GRPOConfig(
      output_dir=output_dir, per_device_train_batch_size=P * G // m,
      gradient_accumulation_steps=m, num_generations=G, max_completion_length=N,
      generation_kwargs={"min_new_tokens": N},  # EOS masked until the budget: full length
      temperature=1.0, top_k=0, top_p=1.0, loss_type="dapo", beta=0.0, num_iterations=1,
      epsilon=CLIP, scale_rewards="group", max_steps=spec["warmup"] + spec["reps"],
      learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
      adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
      optim="adamw_torch_fused", gradient_checkpointing=spec["gradient_checkpointing"],
      bf16=False, fp16=False, use_cpu=True, report_to=[], save_strategy="no",
      logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
      shuffle_dataset=False, disable_dropout=True, log_completions=False, seed=0)


def _wrap(obj, name, seconds, after=None):
  """Replaces obj.name by a wrapper that appends each call's duration to ``seconds``."""
  inner = getattr(obj, name)

  def wrapper(*args, **kwargs):
    t0 = time.perf_counter()
    result = inner(*args, **kwargs)
    seconds.append(time.perf_counter() - t0)
    if after is not None:
      after(result)
    return result
  setattr(obj, name, wrapper)


def _trl_logps_check(trainer, parity_path):
  """TRL's own scoring function on our first rollout's rows: max |TRL - our old log-probs|."""
  import numpy as np
  import torch
  data = np.load(parity_path)
  sequence = torch.tensor(data["sequence"], dtype=torch.long)
  N = data["old_logps"].shape[1]
  with torch.no_grad():
    logps, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, sequence, torch.ones_like(sequence), N)
  return float(np.abs(logps.numpy() - data["old_logps"]).max())


def worker_trl(spec):
  import numpy as np
  import torch
  torch.set_num_threads(spec["threads"])
  import transformers
  import trl
  from datasets import Dataset
  from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
  from trl import GRPOTrainer

  out = {"rss_after_imports_mb": rss_mb()["rss"], "torch": torch.__version__,
         "transformers": transformers.__version__, "trl": trl.__version__,
         "torch_threads": torch.get_num_threads()}
  warmup, reps, P, N = spec["warmup"], spec["reps"], spec["prompts"], spec["new_tokens"]
  prompt_ids = np.load(spec["prompts_path"])[:(warmup + reps) * P]
  tok = AutoTokenizer.from_pretrained(spec["model"])
  texts = [" ".join(f"t{int(i)}" for i in row) for row in prompt_ids]
  for text, row in zip(texts, prompt_ids):  # TRL must see exactly our prompt ids
    assert tok(text)["input_ids"] == row.tolist()
  rewards_seen, lengths_seen, losses = [], [], []

  def hash_reward(prompts, completions, completion_ids, **_):
    values = hash_rewards(completion_ids)
    rewards_seen.append(float(values.mean()))
    return values.tolist()

  generate_s, prepare_s, m = [], [], spec["micro_batches"]

  class Timer(TrainerCallback):
    """Each iteration's phases: sampling = _generate, scoring = the rest of _prepare_inputs
    (m calls; the first generates and scores), update = the rest of the optimizer step."""

    def __init__(self):
      self.phases, self.loads = [], []

    def on_step_begin(self, args, state, control, **kw):
      if state.global_step == warmup:  # set-up and the warm-up iterations are done
        self.setup_peak = rss_mb()["peak"]
        self.peak_reset = reset_peak_rss()
      if state.global_step >= warmup:
        self.loads.append(machine_load(1.0))
      self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
      whole, prepare = time.perf_counter() - self.begin, sum(prepare_s[-m:])
      self.phases.append({"sample": generate_s[-1], "score": prepare - generate_s[-1],
                          "update": whole - prepare})
      i = state.global_step - 1
      _progress(i, self.phases[-1], "warm-up" if i < warmup else
                f"load before {self.loads[i - warmup]:.2f}")

  policy = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
  timer = Timer()
  trainer = GRPOTrainer(model=policy, reward_funcs=hash_reward,
                        args=_trl_config(spec, tempfile.mkdtemp(prefix="grpo_step_trl_")),
                        train_dataset=Dataset.from_dict({"prompt": texts}),
                        processing_class=tok, callbacks=[timer])
  if os.path.exists(spec["parity_path"]):  # absent when our worker failed
    out["logps_max_abs_diff_vs_ours"] = _trl_logps_check(trainer, spec["parity_path"])
  step_s = []
  _wrap(trainer, "_generate", generate_s,
        after=lambda result: lengths_seen.append([len(c) for c in result[1]]))
  _wrap(trainer, "_prepare_inputs", prepare_s)
  _wrap(trainer, "training_step", step_s, after=lambda loss: losses.append(float(loss)))
  t0 = time.perf_counter()
  trainer.train()
  out["train_seconds_total"] = time.perf_counter() - t0
  mem = rss_mb()
  phases = timer.phases[warmup:]
  assert all(n == N for row in lengths_seen for n in row), "TRL stopped a completion early"
  records = [{"loss": sum(losses[i * m:(i + 1) * m]), "reward_mean": rewards_seen[i],
              "mean_length": float(np.mean(lengths_seen[i]))}
             for i in range(warmup + reps)]
  out.update(_phase_stats(phases, spec), phases=phases, records=records,
             load_before_iterations=timer.loads, warmup_phases=timer.phases[:warmup],
             peak_reset=timer.peak_reset, peak_rss_mb=max(timer.setup_peak, mem["peak"]),
             peak_rss_timed_mb=mem["peak"] if timer.peak_reset else None,
             rss_end_mb=mem["rss"])
  return out

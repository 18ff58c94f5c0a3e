"""The worker processes of benchmarks/dpo_step.py: our step, TRL's DPOTrainer, and the
profile of where our step's time goes. Each runs in its own subprocess (see dpo_step.py)."""

from __future__ import annotations

import statistics
import tempfile
import time

from benchmarks.common import machine_load, reset_peak_rss, rss_mb

B, PROMPT, RESPONSE = 8, 128, 128
T = PROMPT + RESPONSE
TOKENS_PER_STEP = 2 * B * T
BETA, LR = 0.1, 1e-5
MATMUL = (2048, 512, 2048)
MIX_PROMPT, MIX_RESPONSE = (32, 256), (16, 256)  # --mix: uniform lengths in these ranges
CONFIGS = ("ours-ref", "trl-ref", "ours-cached", "trl-cached", "ours-cached-tworow",
           "ours-ref-tworow", "ours-ref-remat", "ours-cached-remat", "trl-ref-ckpt", "profile")
DEFAULT = tuple(c for c in CONFIGS if c not in ("trl-ref-ckpt", "ours-ref-tworow"))


def _stats(xs):
  xs = list(xs)
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
          "all": xs}


def _rep_stats(rep_seconds, steps, rep_tokens=None):
  """Per-rep s/step and tokens/s; ``rep_tokens`` the real tokens of each rep's steps
  (default: ``steps * TOKENS_PER_STEP``, the fixed shape)."""
  rep_tokens = rep_tokens or [steps * TOKENS_PER_STEP] * len(rep_seconds)
  return {"seconds_per_step": _stats([t / steps for t in rep_seconds]),
          "tokens_per_s": _stats([n / t for n, t in zip(rep_tokens, rep_seconds)])}


def rep_tokens(data, warmup, reps, steps):
  """Real tokens (2 prompts + both responses per pair) of each timed rep."""
  lengths = data[3]
  per_step = [int(lengths[s * B:(s + 1) * B].sum()) for s in range(warmup + reps * steps)]
  return [sum(per_step[warmup + r * steps:warmup + (r + 1) * steps]) for r in range(reps)]


# ---------------------------------------------------------------- data (shared by both sides)

def make_data(path, n_pairs, vocab_size, eos_id, seed=4, mix=False):
  """prompt [n, 128], chosen / rejected [n, 128] (127 random ids + EOS), ids below EOS.
  ``mix``: prompt lengths uniform in MIX_PROMPT, each response's in MIX_RESPONSE (EOS
  included), right-padded with EOS to the widest; lengths in ``prompt_len`` etc."""
  import numpy as np
  rng = np.random.default_rng(seed)
  widths = (MIX_PROMPT[1], MIX_RESPONSE[1]) if mix else (PROMPT, RESPONSE)
  lens = {"prompt_len": np.full(n_pairs, PROMPT), "chosen_len": np.full(n_pairs, RESPONSE),
          "rejected_len": np.full(n_pairs, RESPONSE)}
  if mix:
    lens = {"prompt_len": rng.integers(MIX_PROMPT[0], MIX_PROMPT[1] + 1, n_pairs),
            "chosen_len": rng.integers(MIX_RESPONSE[0], MIX_RESPONSE[1] + 1, n_pairs),
            "rejected_len": rng.integers(MIX_RESPONSE[0], MIX_RESPONSE[1] + 1, n_pairs)}
  assert eos_id == vocab_size - 1
  arrays = {}
  for name, width in (("prompt", widths[0]), ("chosen", widths[1]), ("rejected", widths[1])):
    x = rng.integers(0, vocab_size - 1, (n_pairs, width), dtype=np.int32)
    n = lens[f"{name}_len"]
    x[np.arange(width)[None, :] >= n[:, None]] = eos_id  # padding (never read)
    if name != "prompt":
      x[np.arange(n_pairs), n - 1] = eos_id
    arrays[name] = x
  np.savez(path, **arrays, **{k: v.astype(np.int32) for k, v in lens.items()})


def _load_data(path):
  """(prompt, chosen, rejected) row lists of real ids, and each pair's real tokens
  (2 prompts + both responses: the tokens a two-row step scores)."""
  import numpy as np
  d = np.load(path)
  rows = tuple([x[i, :n].astype(np.int32) for i, n in enumerate(d[f"{name}_len"])]
               for name, x in (("prompt", d["prompt"]), ("chosen", d["chosen"]),
                               ("rejected", d["rejected"])))
  tokens = 2 * d["prompt_len"] + d["chosen_len"] + d["rejected_len"]
  return (*rows, tokens)


def _bucket(n):
  width = 16
  while width < n:
    width *= 2
  return width


def _our_batches(data, n_steps, layout="shared"):
  """Our batch dicts, on device: two rows per pair right-padded to the batch's bucket (16,
  32, 64, ..., as the data pipeline pads), loss mask on the response; ``layout="shared"``
  (the library default for DPO) then lays each pair out as one shared-prompt row."""
  import jax
  import numpy as np
  from jaxalign.data.pair_layout import shared_prompt_pairs
  prompt, chosen, rejected, _ = data
  batches = []
  for s in range(n_steps):
    rows = range(s * B, (s + 1) * B)
    width = _bucket(max(len(prompt[i]) + max(len(chosen[i]), len(rejected[i])) for i in rows))
    batch = {}
    for name, resp in (("chosen", chosen), ("rejected", rejected)):
      tokens, attention, loss = (np.zeros((B, width), np.int32) for _ in range(3))
      for b, i in enumerate(rows):
        p, n = len(prompt[i]), len(prompt[i]) + len(resp[i])
        tokens[b, :n] = np.concatenate([prompt[i], resp[i]])
        attention[b, :n], loss[b, p:n] = 1, 1
      batch.update({f"{name}_tokens": tokens, f"{name}_attention_mask": attention,
                    f"{name}_loss_mask": loss})
    if layout == "shared":
      batch = shared_prompt_pairs(batch)
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
  data = _load_data(spec["data"])
  batches = _our_batches(data, warmup + reps * steps, spec["layout"])
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
  # Steady state: compile every batch shape the timed steps will see (the length mix has
  # several buckets) on a throw-away copy of the state, as a long run compiles each bucket
  # once; the compile time is reported, not timed. TRL (eager) needs no such pass.
  seen = {tuple(sorted((k, v.shape) for k, v in batches[i].items()))
          for i in range(warmup)}
  for batch in batches[warmup:]:
    shapes = tuple(sorted((k, v.shape) for k, v in batch.items()))
    if shapes not in seen:
      seen.add(shapes)
      jax.block_until_ready(step(jax.tree_util.tree_map(jnp.copy, state), batch))
  out["compiled_shapes"] = len(seen)
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
  tokens = rep_tokens(data, warmup, reps, steps)
  out.update(_rep_stats(reps_s, steps, tokens), rep_seconds=reps_s, load_before_reps=loads,
             steps_per_rep=steps, rep_tokens=tokens, layout=spec["layout"],
             losses=losses, n_params=n_params, flops_per_step=(8 if not spec["cached"] else 6)
             * n_params * sum(tokens) / (reps * steps),
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
  batch = _our_batches(_load_data(spec["data"]), 1, "two-row")[0]
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
  data = _load_data(spec["data"])
  prompt, chosen, rejected = (x[:n_steps * B] for x in data[:3])
  max_length = max(len(p) + max(len(c), len(r)) for p, c, r in zip(prompt, chosen, rejected))
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
      beta=BETA, loss_type=["sigmoid"], max_length=max(T, max_length),
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
  widest = max(len(prompt[i]) + max(len(chosen[i]), len(rejected[i])) for i in range(B))
  assert tuple(collated["input_ids"].shape) == (2 * B, widest), collated["input_ids"].shape
  assert collated["completion_mask"].sum(1).tolist() == (
      [len(chosen[i]) for i in range(B)] + [len(rejected[i]) for i in range(B)])

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
  tokens = rep_tokens(data, warmup, reps, steps)
  out.update(_rep_stats(reps_s, steps, tokens), rep_seconds=reps_s, steps_per_rep=steps,
             rep_tokens=tokens,
             rep_seconds_step_begin_to_end_only=inner, load_before_reps=timer.loads,
             warmup_seconds=sum(timer.end[i] - timer.begin[i] for i in range(warmup)),
             losses=losses, n_params=sum(p.numel() for p in policy.parameters()),
             peak_reset=timer.peak_reset, peak_rss_mb=max(timer.setup_peak, mem["peak"]),
             peak_rss_timed_steps_mb=mem["peak"] if timer.peak_reset else None,
             rss_end_mb=mem["rss"])
  out["flops_per_step"] = ((6 if spec["cached"] else 8) * out["n_params"] * sum(tokens)
                          / (reps * steps))
  return out


# ---------------------------------------------------------------- parent

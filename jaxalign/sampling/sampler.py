"""The compiled sampler: one prefill pass, then a ``lax.scan`` decode loop with a KV cache.

Everything from the prefill to the last token is one jitted program per (batch, prompt
length, budget, static settings), running on the same params the trainer holds. The scan
carries the cache, the rng and a done mask; rows that emitted EOS emit ``pad_id`` after it.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.models import Transformer, TransformerConfig, init_cache
from jaxalign.models.lora import model_variables
from jaxalign.sampling.filters import sampling_logits


@flax.struct.dataclass
class SampleOutput:
  """What ``generate`` returns. All arrays have ``T_new = max_new_tokens`` columns.

  tokens:             [B, T_new] new tokens; ``pad_id`` after a row's EOS.
  logprobs:           [B, T_new] log-prob of each token under the raw policy (temperature 1).
  tempered_logprobs:  [B, T_new] under softmax(logits / T): what PPO's ratio recomputes.
  sampling_logprobs:  [B, T_new] under the distribution sampled from (after top-k / top-p).
  response_mask:      [B, T_new] 1 on real tokens up to and including the first EOS.
  lengths:            [B] number of real new tokens.
  sequence:           [B, P + T_new] prompt then response (None unless asked for).
  sequence_mask:      [B, P + T_new] attention mask of ``sequence``.
  kept_counts:        [B, T_new] int32, how many tokens the sampling distribution kept at
                      each step (after suppress_tokens / top-k / top-p; ties at a cut-off
                      count); 0 on padding. ``filters.truncated_logprobs`` recomputes
                      ``sampling_logprobs`` from any logits with it: the trainer's log-probs
                      then live on the support the sampler drew from.
  All log-probs are exactly 0 where ``response_mask`` is 0. With ``num_samples = G`` every
  array has ``B * G`` rows, prompt-major (row ``b * G + g`` is sample g of prompt b).

  Greedy (temperature 0): ``tempered_logprobs`` equals ``logprobs``, the raw temperature-1
  log-prob of the argmax token (no T -> 0 limit is taken). ``sampling_logprobs`` is that
  same raw log-prob, or, with ``suppress_tokens``, the log-prob under the raw policy
  renormalised over the unsuppressed tokens; top-k / top-p do not enter it. None of them is
  the log-prob 0 of the point mass greedy decoding actually draws from.
  """

  tokens: jax.Array
  logprobs: jax.Array
  tempered_logprobs: jax.Array
  sampling_logprobs: jax.Array
  response_mask: jax.Array
  lengths: jax.Array
  sequence: jax.Array | None = None
  sequence_mask: jax.Array | None = None
  kept_counts: jax.Array | None = None


def _check_inputs(config, prompt_tokens, prompt_mask, max_new_tokens, temperature, top_k,
                  top_p):
  if prompt_tokens.ndim != 2 or prompt_tokens.shape != prompt_mask.shape:
    raise ValueError(f"prompt_tokens {prompt_tokens.shape} and prompt_mask "
                     f"{prompt_mask.shape} must both be [B, P]")
  P = prompt_tokens.shape[1]
  if P > config.max_seq_len:
    raise ValueError(f"prompt length {P} exceeds the model's context "
                     f"max_seq_len={config.max_seq_len}")
  if max_new_tokens < 1 or P + max_new_tokens > config.max_seq_len:
    raise ValueError(f"max_new_tokens={max_new_tokens} with prompt length {P} needs "
                     f"{P + max_new_tokens} positions; the model has {config.max_seq_len}")
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
  if top_k < 0:
    raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  if not isinstance(prompt_mask, jax.core.Tracer):
    _check_mask_rows(_host_row_blocks(prompt_mask))


def _host_row_blocks(mask):
  """The rows of ``mask`` ([B, P]) this process can read, as [(first_row, [b, P] ndarray)].

  The whole mask, unless it is a ``jax.Array`` spanning several processes
  (``jax.make_array_from_process_local_data``): then its addressable shards, the column
  pieces of the same rows joined, each row block once. Rows whose columns are partly on
  another process cannot be read here and are left out.
  """
  if not isinstance(mask, jax.Array) or mask.is_fully_addressable:
    return [(0, np.asarray(mask))]
  pieces = {}  # (first row, end row) -> {first column: [b, p] block}
  for shard in mask.addressable_shards:
    (r0, r1, _), (c0, _, _) = (s.indices(n) for s, n in zip(shard.index, mask.shape))
    pieces.setdefault((r0, r1), {})[c0] = np.asarray(shard.data)
  blocks = [(r0, np.concatenate([cols[c] for c in sorted(cols)], axis=1))
            for (r0, _), cols in sorted(pieces.items())]
  return [(r0, block) for r0, block in blocks if block.shape[1] == mask.shape[1]]


def _rows_where(blocks, flag):
  """Global indices, ascending, of the rows where ``flag(block)`` ([b] bool) holds."""
  return sorted(r0 + int(i) for r0, block in blocks for i in np.nonzero(flag(block))[0])


def _check_mask_rows(blocks):
  """Host-side checks of the prompt mask: left-padded, and no row without a real token."""
  bad = _rows_where(blocks, lambda m: np.any(np.diff(m.astype(np.int32), axis=1) < 0, axis=1))
  if bad:
    raise ValueError(f"prompt_mask is not left-padded (padding must come first) in rows "
                     f"{bad[:8]}")
  empty = _rows_where(blocks, lambda m: m.sum(axis=1) == 0)
  if empty:
    raise ValueError(f"prompt rows {empty[:8]} have no real token")


def generate(config: TransformerConfig, params, prompt_tokens, prompt_mask, rng, *,
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: int | None = None, pad_id: int = 0,
             return_sequence: bool = False, early_exit: bool = True,
             suppress_tokens: tuple[int, ...] = (), num_samples: int = 1) -> SampleOutput:
  """Samples ``max_new_tokens`` tokens after left-padded prompts.

  Args:
    config, params: the policy (params in f32 or bf16, possibly sharded over a mesh).
    prompt_tokens: [B, P] int, left-padded. prompt_mask: [B, P], 1 on real tokens.
    rng: a PRNG key; the same key gives the same output.
    temperature: 0 means greedy. top_k: 0 = off. top_p: 1 = off (ties at the cut-off are
      all kept, see ``top_p_filter``).
    eos_id: a row stops after emitting it (None: never stops early).
    early_exit: decode with a ``while_loop`` that stops once every row is done (same
      output; faster when all rows finish well before the budget, see docs/sampling.md).
    suppress_tokens: ids never sampled (e.g. pad or BOS), like transformers'
      ``suppress_tokens``; they leave the sampling distribution (``sampling_logprobs``) but
      ``logprobs`` / ``tempered_logprobs`` stay those of the unrestricted policy.
    num_samples: G samples per prompt from ONE prefill: the prompts' KV cache is computed
      once and repeated G times before decoding (GRPO / RLOO groups, best-of-n). Rows come
      out prompt-major.

  Returns a ``SampleOutput``. At temperature 0 its ``logprobs`` and ``tempered_logprobs``
  are both the raw (temperature 1) log-probs of the argmax tokens, and
  ``sampling_logprobs`` the same, renormalised over the unsuppressed tokens when
  ``suppress_tokens`` is set (top-k / top-p are ignored: the argmax survives any filter).
  ``prompt_mask`` may be a global ``jax.Array`` over several processes; its host-side
  checks then run on the rows this process holds (a bad row raises on its own process).
  """
  if any(not 0 <= t < config.vocab_size for t in suppress_tokens):
    raise ValueError(f"suppress_tokens {suppress_tokens} outside the vocabulary "
                     f"[0, {config.vocab_size})")
  _check_inputs(config, prompt_tokens, prompt_mask, max_new_tokens, temperature, top_k, top_p)
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  greedy = temperature == 0
  return _generate(config, params, jnp.asarray(prompt_tokens, jnp.int32),
                   jnp.asarray(prompt_mask, jnp.int32), rng,
                   jnp.float32(1.0 if greedy else temperature), jnp.float32(top_p),
                   max_new_tokens=max_new_tokens, greedy=greedy, top_k=int(top_k),
                   use_top_p=top_p < 1.0, eos_id=eos_id, pad_id=int(pad_id),
                   return_sequence=return_sequence, early_exit=early_exit and eos_id is not None,
                   suppress_tokens=tuple(int(t) for t in suppress_tokens),
                   num_samples=int(num_samples))


def _repeat_rows(tree, times: int):
  """Every leaf (batch-major) repeated ``times`` along axis 0 (row b -> rows b*G .. b*G+G-1);
  the cache has its own ``KVCache.repeat_rows``."""
  if times == 1:
    return tree
  return jax.tree_util.tree_map(lambda x: jnp.repeat(x, times, axis=0), tree)


@functools.partial(jax.jit, static_argnames=(
    "config", "max_new_tokens", "greedy", "top_k", "use_top_p", "eos_id", "pad_id",
    "return_sequence", "early_exit", "suppress_tokens", "num_samples"))
def _generate(config, params, prompt_tokens, prompt_mask, rng, temperature, top_p, *,
              max_new_tokens, greedy, top_k, use_top_p, eos_id, pad_id, return_sequence,
              early_exit=False, suppress_tokens=(), num_samples=1):
  model = Transformer(config)
  B, P = prompt_tokens.shape
  cache = init_cache(config, B, P + max_new_tokens - 1)
  logits, cache = model.apply(model_variables(params), prompt_tokens, attention_mask=prompt_mask,
                              cache=cache)
  # One prefill per prompt; its cache, last logits and prompt repeated for the G samples.
  cache = cache.repeat_rows(num_samples)  # either layout (per-layer or stacked)
  logits, prompt_tokens, prompt_mask = _repeat_rows(
      (logits[:, -1:], prompt_tokens, prompt_mask), num_samples)
  B = B * num_samples

  def suppress(logits_bv):
    if not suppress_tokens:
      return logits_bv
    return logits_bv.at[:, jnp.asarray(suppress_tokens)].set(-jnp.inf)

  def choose(logits_bv, key, done):
    raw = jax.nn.log_softmax(logits_bv.astype(jnp.float32), axis=-1)  # [B, V]
    if greedy:
      token = jnp.argmax(suppress(raw), axis=-1)
      tempered = raw
      sampled = jax.nn.log_softmax(suppress(raw), axis=-1) if suppress_tokens else raw
    else:
      tempered = jax.nn.log_softmax(logits_bv.astype(jnp.float32) / temperature, axis=-1)
      sampled = jax.nn.log_softmax(sampling_logits(
          suppress(logits_bv.astype(jnp.float32)), temperature, top_k, top_p, use_top_p),
          axis=-1)
      token = jax.random.categorical(key, sampled, axis=-1)
    token = jnp.where(done, pad_id, token).astype(jnp.int32)
    # A select, not ``* live``: a suppressed or filtered pad scores -inf, and -inf * 0 is NaN.
    pick = lambda lp: jnp.where(done, 0.0,
                                jnp.take_along_axis(lp, token[:, None], axis=-1)[:, 0])
    now_done = done if eos_id is None else done | (token == eos_id)
    live = (~done).astype(jnp.float32)
    kept = jnp.where(done, 0.0, jnp.sum(jnp.isfinite(sampled), axis=-1).astype(jnp.float32))
    return token, (pick(raw), pick(tempered), pick(sampled), live, kept), now_done

  def step(carry, key):
    cache, last_logits, done = carry
    token, record, done_after = choose(last_logits, key, done)
    logits, cache = model.apply(model_variables(params), token[:, None],
                                attention_mask=(~done)[:, None].astype(jnp.int32),
                                cache=cache)
    return (cache, logits[:, -1], done_after), (token, record)

  keys = jax.random.split(rng, max_new_tokens)
  done = jnp.zeros((B,), bool)
  if early_exit:
    columns = _decode_until_done(step, choose, cache, logits[:, -1], done, keys, pad_id)
  else:
    (_, last_logits, done), (tokens, records) = jax.lax.scan(
        step, (cache, logits[:, -1], done), keys[:-1])
    last_token, last_record, _ = choose(last_logits, keys[-1], done)
    columns = [jnp.concatenate([r, l[None]], axis=0)
               for r, l in zip((tokens,) + records, (last_token,) + last_record)]
  tokens, logps, tempered, sampled, live, kept = (c.T for c in columns)  # each [B, T_new]
  response_mask = live.astype(jnp.int32)
  out = SampleOutput(tokens=tokens, logprobs=logps, tempered_logprobs=tempered,
                     sampling_logprobs=sampled, response_mask=response_mask,
                     lengths=response_mask.sum(axis=1), kept_counts=kept.astype(jnp.int32))
  if return_sequence:
    out = out.replace(sequence=jnp.concatenate([prompt_tokens, tokens], axis=1),
                      sequence_mask=jnp.concatenate([prompt_mask, response_mask], axis=1))
  return out


def _decode_until_done(step, choose, cache, logits, done, keys, pad_id):
  """The decode loop as a ``lax.while_loop`` that stops once every row has emitted EOS.

  Same keys, same tokens as the scan; columns after the exit keep ``pad_id`` and zero
  log-probs, exactly what the scan writes for finished rows. Returns [T_new, B] columns
  (tokens, logprobs, tempered, sampled, live, kept).
  """
  T, B = keys.shape[0], done.shape[0]
  columns = (jnp.full((T, B), pad_id, jnp.int32),) + tuple(
      jnp.zeros((T, B), jnp.float32) for _ in range(5))

  def write(columns, i, values):
    return tuple(c.at[i].set(v.astype(c.dtype)) for c, v in zip(columns, values))

  def cond(carry):
    i, _, _, done, _ = carry
    return (i < T - 1) & ~jnp.all(done)

  def body(carry):
    i, cache, last_logits, done, columns = carry
    (cache, logits, done), (token, record) = step((cache, last_logits, done), keys[i])
    return i + 1, cache, logits, done, write(columns, i, (token,) + record)

  i, _, last_logits, done, columns = jax.lax.while_loop(
      cond, body, (jnp.int32(0), cache, logits, done, columns))
  token, record, _ = choose(last_logits, keys[i], done)
  return write(columns, i, (token,) + record)

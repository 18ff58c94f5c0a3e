"""The largest batch a run fits on a topology (``jaxalign plan --largest-batch``).

The batch key is the task's rows per step: ``data.batch_size`` (sft, rm, dpo, online-dpo),
``ppo.rollout_batch_size`` (ppo), ``grpo.prompts_per_iteration`` (grpo, rloo). Candidates are
multiples of the configured value (so every divisibility the run's config satisfies, over
batch shards, micro-batches and minibatches, still holds) and, when the configured value
does not fit, its halvings that still pass the config checks. Each candidate is planned in
full (every program compiled, as ``plan``): doubling until one does not fit, then bisecting
between the last that fits and the first that does not. What is measured is the compiler's
per-device total against the HBM, nothing extrapolated.
"""

from __future__ import annotations

from jaxalign.config import ConfigError, RunConfig, from_dict
from jaxalign.config.loading import set_dotted, to_dict
from jaxalign.config.validate import resolve_run, validate_run
from jaxalign.planning.plan import plan

BATCH_KEYS = {"ppo": "ppo.rollout_batch_size", "grpo": "grpo.prompts_per_iteration",
              "rloo": "grpo.prompts_per_iteration"}


def batch_key(run: RunConfig) -> str:
  return BATCH_KEYS.get(run.task, "data.batch_size")


def _value(run: RunConfig, key: str) -> int:
  section, name = key.split(".")
  return int(getattr(getattr(run, section), name))


def with_batch(run: RunConfig, key: str, value: int) -> tuple[RunConfig | None, str | None]:
  """``(run with key=value, None)``, or ``(None, the error)`` when that value fails the
  config checks."""
  data = to_dict(run)
  set_dotted(data, key, value)
  try:
    candidate = resolve_run(from_dict(RunConfig, data))
    validate_run(candidate)
  except (ConfigError, ValueError) as error:
    return None, f"{key}={value}: {error}"
  return candidate, None


def _peak(report: dict) -> int:
  return max(program["total"] for program in report["programs"])


def largest_batch(run: RunConfig, topology: str, hbm_gib: float | None = None, log=None,
                  max_doublings: int = 12, first_report: dict | None = None) -> dict:
  """``{"key", "configured", "largest", "smallest_failing", "tried": [{"value", "fits",
  "peak_bytes"}]}``; ``largest`` is None when not even the smallest valid halving fits,
  ``smallest_failing`` None when the doublings ran out first. ``stopped`` says why the
  search ended where it did not end at a value that does not fit (a value failing the config
  checks, or the doublings ran out), else None. ``first_report``: ``plan``'s report of
  ``run`` itself, when already made (not compiled again)."""
  key = batch_key(run)
  start = _value(run, key)
  tried: dict[int, bool] = {}
  rows = []
  stopped: list[str] = []  # why the search ended short of a value that does not fit
  if first_report is not None and first_report["fits"] is not None:
    tried[start] = bool(first_report["fits"])
    rows.append({"value": start, "fits": tried[start], "peak_bytes": _peak(first_report)})

  def fits(value: int) -> bool | None:
    if value in tried:
      return tried[value]
    candidate, error = with_batch(run, key, value)
    if candidate is None:
      stopped.append(error)
      return None
    if log:
      log(f"planning {key}={value}...")
    report = plan(candidate, topology, hbm_gib=hbm_gib)
    if report["fits"] is None:
      raise ValueError("--largest-batch needs a memory size to fit against: this topology "
                       "has none (a CPU compile), give --hbm-gib")
    tried[value] = bool(report["fits"])
    rows.append({"value": value, "fits": tried[value], "peak_bytes": _peak(report)})
    return tried[value]

  low = high = None  # low: a multiple of start that fits; high: one that does not
  if fits(start):
    low = 1
    for _ in range(max_doublings):
      outcome = fits(start * low * 2)
      if outcome is None:  # past what the config checks allow: the search ends there
        break
      if not outcome:
        high = low * 2
        break
      low *= 2
  else:  # halvings that still pass the config checks, until one fits
    value = start
    while value % 2 == 0:
      outcome = fits(value // 2)
      if outcome is None:
        break
      if outcome:
        return _result(key, start, value // 2, value, rows, stopped)
      value //= 2
    if not stopped and value % 2:
      stopped.append(f"{key}={value} is odd: no smaller halving to try")
    return _result(key, start, None, value, rows, stopped)
  if high is None:
    if not stopped:
      stopped.append(f"{max_doublings} doublings all fit (max_doublings)")
    return _result(key, start, start * low, None, rows, stopped)
  while high - low > 1:  # multiples of start: low fits, high does not
    middle = (low + high) // 2
    outcome = fits(start * middle)
    if outcome is None:  # not a valid config (e.g. a divisibility): stop at this resolution
      break
    low, high = (middle, high) if outcome else (low, middle)
  return _result(key, start, start * low, start * high, rows, stopped)


def _result(key, configured, largest, failing, rows, stopped) -> dict:
  return {"key": key, "configured": configured, "largest": largest,
          "smallest_failing": failing, "stopped": stopped[0] if stopped else None,
          "tried": sorted(rows, key=lambda r: r["value"])}


def format_search(result: dict) -> str:
  from jaxalign.planning.memory import gib
  lines = [f"largest {result['key']} that fits: {result['largest']}"
           + ("" if result["smallest_failing"] is None
              else f" ({result['smallest_failing']} does not)")]
  if result["stopped"]:
    lines.append(f"  the search stopped there: {result['stopped']}")
  lines += [f"  {result['key']}={row['value']:<8} peak {gib(row['peak_bytes']).strip():>12}  "
            f"{'fits' if row['fits'] else 'does not fit'}" for row in result["tried"]]
  return "\n".join(lines)

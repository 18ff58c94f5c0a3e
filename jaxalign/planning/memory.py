"""Per-device memory of each compiled program, by category, against the chip's HBM.

The categories of long-lived arrays (params, optimizer state, reference, reward model,
critic, the frozen LoRA base) and each program's own inputs (the batch, prompts, rollout)
are counted exactly from their shapes, dtypes and shardings (``abstract.device_bytes``).
The compiler's ``memory_analysis()`` gives the rest: temporaries, outputs that do not reuse a
donated input, the program's code. A program's total is what is on one device while it runs:

  total = long-lived arrays it does not take + arguments + (outputs - aliased) + temporaries
          + generated code
"""

from __future__ import annotations

import time

from jaxalign.planning.abstract import device_bytes
from jaxalign.planning.chips import GIB


def compile_program(program) -> tuple[object, float]:
  start = time.perf_counter()
  compiled = program.lower().compile()
  return compiled, time.perf_counter() - start


def program_memory(program, resident_bytes: dict[str, int], hbm: int | None) -> dict:
  """Compiles ``program`` and returns its report (a JSON-able dict of bytes per device)."""
  compiled, seconds = compile_program(program)
  stats = compiled.memory_analysis()
  taken = {k: resident_bytes[k] for k in program.arguments if k in resident_bytes}
  held = {k: v for k, v in resident_bytes.items() if k not in program.arguments}
  inputs = {k: device_bytes(v) for k, v in program.inputs.items()}
  new_outputs = max(int(stats.output_size_in_bytes) - int(stats.alias_size_in_bytes), 0)
  compiler = {"argument_size_in_bytes": int(stats.argument_size_in_bytes),
              "output_size_in_bytes": int(stats.output_size_in_bytes),
              "alias_size_in_bytes": int(stats.alias_size_in_bytes),
              "temp_size_in_bytes": int(stats.temp_size_in_bytes),
              "generated_code_size_in_bytes": int(stats.generated_code_size_in_bytes)}
  total = (sum(held.values()) + compiler["argument_size_in_bytes"] + new_outputs
           + compiler["temp_size_in_bytes"] + compiler["generated_code_size_in_bytes"])
  return {"name": program.name, "compile_seconds": round(seconds, 2),
          "arguments": dict(taken, **inputs), "held": held,
          "outputs_not_aliased": new_outputs, "temporaries": compiler["temp_size_in_bytes"],
          "generated_code": compiler["generated_code_size_in_bytes"], "total": total,
          "fits": None if hbm is None else total <= hbm, "compiler": compiler}


def gib(n: int) -> str:
  """Bytes in GiB, or MiB / KiB for small amounts (tiny models)."""
  if n >= GIB / 4:
    return f"{n / GIB:9.3f} GiB"
  if n >= 2 ** 20:
    return f"{n / 2 ** 20:9.3f} MiB"
  return f"{n / 2 ** 10:9.3f} KiB"


def _verdict(fits, total: int, hbm: int | None) -> str:
  if hbm is None:
    return "(no HBM to fit against: give --hbm-gib)"
  return f"{'fits' if fits else 'does not fit'} ({100 * total / hbm:.0f}% of {hbm / GIB:.2f} GiB)"


def format_program(report: dict, hbm: int | None) -> list[str]:
  lines = [f"{report['name']} (compiled in {report['compile_seconds']:.1f} s)"]
  for name, size in report["arguments"].items():
    lines.append(f"  {name:<28}{gib(size)}")
  for name, size in report["held"].items():
    lines.append(f"  {name + ' (held)':<28}{gib(size)}")
  for name in ("outputs_not_aliased", "temporaries", "generated_code"):
    lines.append(f"  {name.replace('_', ' '):<28}{gib(report[name])}")
  lines.append(f"  {'total':<28}{gib(report['total'])}   "
               f"{_verdict(report['fits'], report['total'], hbm)}")
  return lines


def format_report(report: dict) -> str:
  """The plan as a table per program, then the verdict and suggestions."""
  hbm = report["hbm_bytes_per_device"]
  mesh = " ".join(f"{k}={v}" for k, v in report["mesh"].items())
  model = report["model"]
  lines = [f"jaxalign plan {report['task']}: {report['label']}",
           f"mesh: {mesh} ({report['num_devices']} devices); batch rows over data x fsdp",
           f"model: {model['model_type']} {model['num_params'] / 1e9:.3f}B params, "
           f"{model['num_layers']} layers, param_dtype {model['param_dtype']}, compute "
           f"{model['compute_dtype']}, remat {model['remat']}, scan_layers "
           f"{model['scan_layers']}, lora rank {model['lora_rank']}",
           "memory per device" + ("" if hbm is None else f" (HBM {hbm / GIB:.2f} GiB)"), ""]
  for program in report["programs"]:
    lines += format_program(program, hbm) + [""]
  lines += [f"note: {note}" for note in report["notes"]]
  if report["fits"] is None:
    lines.append("verdict: no HBM size for this topology (a CPU compile): give --hbm-gib")
  else:
    lines.append(f"verdict: {'fits' if report['fits'] else 'does not fit'}")
  if report["suggestions"]:
    lines.append("to make it fit, try:")
    lines += [f"  {' '.join('--set ' + s for s in item['set'])}   # {item['why']}"
              for item in report["suggestions"]]
  return "\n".join(lines)

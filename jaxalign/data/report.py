"""What a loader did with every row: kept, skipped (and why), or kept but changed.

Nothing is dropped without a count. Each loader takes a policy (``on_error="raise"`` or
``"skip"``) and returns a :class:`DataReport` next to its rows. A skipped row adds one to
``skipped[reason]``; a kept row that was changed (a prompt cut from the left, a response cut
with its EOS missing) adds one to ``flagged[reason]``. Up to ``MAX_LOCATIONS`` ``file:line``
locations are kept per reason so a bad file can be found and fixed.
"""

from __future__ import annotations

import collections
import dataclasses

MAX_LOCATIONS = 5

# Reasons a row is skipped (or, under on_error="raise", the error raised).
MALFORMED_JSON = "malformed_json"
INVALID_UTF8 = "invalid_utf8"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
EMPTY_PROMPT = "empty_prompt"
EMPTY_RESPONSE = "empty_response"
IDENTICAL_RESPONSES = "identical_responses"
BAD_VALUE = "bad_value"
TOO_LONG = "too_long"
BAD_CHAT_TEMPLATE = "bad_chat_template"
# Reasons a kept row is flagged.
PROMPT_TRUNCATED = "prompt_truncated"
RESPONSE_TRUNCATED = "response_truncated"

ON_ERROR_POLICIES = ("raise", "skip")


class DataError(ValueError):
  """A bad input row. ``reason`` is one of the constants above, ``location`` is ``file:line``."""

  def __init__(self, reason: str, message: str, location: str | None = None):
    self.reason = reason
    self.location = location
    self.detail = message
    prefix = f"{location}: " if location else ""
    super().__init__(f"{prefix}{reason}: {message}")

  def at(self, location: str) -> DataError:
    """The same error, located (used where the error is raised before the location is known)."""
    return DataError(self.reason, self.detail, location)


@dataclasses.dataclass
class DataReport:
  """Counts of rows read, kept, skipped (per reason) and flagged (per reason).

  Attributes:
    num_rows: rows seen.
    num_kept: rows returned.
    skipped: reason -> number of rows dropped for it.
    flagged: reason -> number of kept rows that were changed (e.g. truncated).
    locations: reason -> up to ``MAX_LOCATIONS`` example ``file:line`` locations.
  """

  num_rows: int = 0
  num_kept: int = 0
  skipped: dict[str, int] = dataclasses.field(default_factory=collections.Counter)
  flagged: dict[str, int] = dataclasses.field(default_factory=collections.Counter)
  locations: dict[str, list[str]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())

  def keep(self) -> None:
    self.num_rows += 1
    self.num_kept += 1

  def skip(self, error: DataError) -> None:
    self.num_rows += 1
    self.skipped[error.reason] += 1
    self._locate(error.reason, error.location)

  def flag(self, reason: str, location: str | None) -> None:
    self.flagged[reason] += 1
    self._locate(reason, location)

  def _locate(self, reason: str, location: str | None) -> None:
    if location is not None and len(self.locations[reason]) < MAX_LOCATIONS:
      self.locations[reason].append(location)

  def merge(self, other: DataReport) -> DataReport:
    """A new report with both reports' counts (locations capped again)."""
    merged = DataReport(num_rows=self.num_rows + other.num_rows,
                        num_kept=self.num_kept + other.num_kept)
    for report in (self, other):
      merged.skipped.update(report.skipped)
      merged.flagged.update(report.flagged)
      for reason, where in report.locations.items():
        for location in where:
          merged._locate(reason, location)
    return merged

  def to_dict(self) -> dict:
    """Plain dict (JSON-able) for dataset metadata and logs."""
    return {"num_rows": self.num_rows, "num_kept": self.num_kept,
            "skipped": dict(self.skipped), "flagged": dict(self.flagged),
            "locations": {k: list(v) for k, v in self.locations.items() if v}}

  def summary(self) -> str:
    """One line, e.g. ``kept 98/100; skipped malformed_json=1 (a.jsonl:7), too_long=1 (...)``."""
    parts = [f"kept {self.num_kept}/{self.num_rows}"]
    for title, counts in (("skipped", self.skipped), ("flagged", self.flagged)):
      if counts:
        items = ", ".join(f"{reason}={count} ({', '.join(self.locations.get(reason, []))})"
                          for reason, count in sorted(counts.items()))
        parts.append(f"{title} {items}")
    return "; ".join(parts)


def check_policy(on_error: str) -> None:
  if on_error not in ON_ERROR_POLICIES:
    raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, got {on_error!r}")


def handle(error: DataError, on_error: str, report: DataReport) -> None:
  """Apply the policy to one bad row: raise it, or count it as skipped."""
  if on_error == "raise":
    raise error
  report.skip(error)

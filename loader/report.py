"""Report files of one loaded file, in the report directory.

- `<stem>.invalid.csv`: every invalid row exactly as read (bytes for bytes),
  and nothing else (no header line, even with --header), so the file can be
  fixed and reloaded without --header or --skip;
- `<stem>.log`: one entry per invalid row: line number and reason, then the
  raw row indented on the next line;
- `<stem>.summary`: the summary line, as printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Counts:
    read: int = 0
    loaded: int = 0
    invalid: int = 0
    duplicates: int = 0  # invalid rows whose key the table already had (23505)
    # Procedure loads: how many calls the function answered true / false, and
    # the names of those answers (accepted / refused, blocked / passed).
    decisions: dict[bool, int] = field(default_factory=dict)
    labels: tuple[str, str] = ("accepted", "refused")

    def summary(self) -> str:
        text = f"read {self.read}, loaded {self.loaded}, invalid {self.invalid}"
        if self.decisions:
            text += (f" ({self.labels[0]} {self.decisions.get(True, 0)},"
                     f" {self.labels[1]} {self.decisions.get(False, 0)})")
        return text


UNIQUE_VIOLATION = "23505"


class MaxErrorsReached(Exception):
    """The load met --max-errors invalid rows and stops."""


class Report:
    def __init__(self, directory: Path, source: Path, max_errors: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stem = source.stem
        self.source_name = source.name
        self.invalid_path = directory / f"{stem}.invalid.csv"
        self.log_path = directory / f"{stem}.log"
        self.summary_path = directory / f"{stem}.summary"
        self.counts = Counts()
        self.max_errors = max_errors
        self.first_invalid: tuple[int, str, bytes] | None = None  # (line, reason, raw)
        self.last_line = 0  # line of the latest invalid row
        self._invalid = open(self.invalid_path, "wb")  # noqa: SIM115 - closed by close()
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115

    def loaded(self, rows: int) -> None:
        self.counts.read += rows
        self.counts.loaded += rows

    def decided(self, answer: bool, labels: tuple[str, str] = ("accepted", "refused")) -> None:
        self.counts.labels = labels
        self.counts.decisions[answer] = self.counts.decisions.get(answer, 0) + 1

    def allowance(self) -> int | None:
        """How many more invalid rows end the load (None: no limit)."""
        if self.max_errors < 0:
            return None
        return max(self.max_errors, 1) - self.counts.invalid

    def invalid(self, line: int, raw: bytes, reason: str, sqlstate: str | None = None) -> None:
        """Records an invalid row; raises MaxErrorsReached when it is the last one allowed."""
        self.counts.read += 1
        self.counts.invalid += 1
        if sqlstate == UNIQUE_VIOLATION:
            self.counts.duplicates += 1
        self.last_line = line
        if self.first_invalid is None:
            self.first_invalid = (line, reason, raw)
        self._invalid.write(raw if raw.endswith((b"\n", b"\r")) else raw + b"\n")
        shown = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        shown = shown.replace("\r", "\\r").replace("\n", "\\n")
        self._log.write(f"{self.source_name} line {line}: {reason}\n    {shown}\n")
        if self.allowance() == 0:
            raise MaxErrorsReached

    def close(self, lines: list[str]) -> None:
        """Ends the log with the closing lines and writes them as the summary."""
        self._invalid.close()
        for line in lines:
            self._log.write(line + "\n")
        self._log.close()
        self.summary_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

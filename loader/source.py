"""A CSV file read as batches of records: the raw bytes exactly as read, with their line numbers.

A record is one line, or several when a quoted field holds a line break
(quote characters balance). Blank lines carry no data: they are skipped but
keep their place in the line numbering. A quote left open at the end of the
file would swallow every following line, so the record is cut back to its
first line (which the database then reports as unterminated) and reading
resumes on the next line.

The common case (no quote character, no blank line in the batch) costs a
few C-level passes over the batch: no Python work per line.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_BLANK = (b"\n", b"\r\n")


@dataclass
class Batch:
    """Consecutive records of one file; lines[i] is the line where records[i] starts."""

    records: list[bytes]
    lines: Sequence[int]
    # True when every record is one line with balanced quotes: only then does
    # PostgreSQL's "line N" in an error name the Nth record of a COPY.
    one_line_records: bool
    data: bytes

    def __len__(self) -> int:
        return len(self.records)


class CsvSource:
    """Reads path in batches of at most batch_size records, after `skip` lines kept aside."""

    def __init__(self, path: Path, quote: bytes, skip: int, batch_size: int) -> None:
        self.path = path
        self.quote = quote
        self.batch_size = batch_size
        self.blank_lines = 0
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by __exit__
        self.skipped_lines = list(itertools.islice(self._file, skip))
        self.bytes_read = sum(map(len, self.skipped_lines))
        self._line_no = len(self.skipped_lines) + 1

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def batches(self) -> Iterator[Batch]:
        while True:
            lines = list(itertools.islice(self._file, self.batch_size))
            if not lines:
                return
            data = b"".join(lines)
            self.bytes_read += len(data)
            first = self._line_no
            if self.quote not in data and not _has_blank(lines):
                self._line_no += len(lines)
                yield Batch(lines, range(first, self._line_no), True, data)
                continue
            batch, self._line_no = self._grouped(lines, first, self._file)
            if batch.records:
                yield batch

    def _grouped(self, lines: list[bytes], line_no: int, file: BinaryIO) -> tuple[Batch, int]:
        """Groups lines into records by quote balance; reads on while a quote is open."""
        records: list[bytes] = []
        starts: list[int] = []
        one_line = True
        pending: list[bytes] = []  # lines of a record whose quote is still open
        pending_start = 0
        i = 0
        while True:
            if i == len(lines):
                if not pending:
                    break
                more = file.readline()
                if more:
                    self.bytes_read += len(more)
                    lines.append(more)
                else:
                    # Unterminated quote: keep only its first line as the record,
                    # and read the lines it swallowed again as records of their own.
                    records.append(pending[0])
                    starts.append(pending_start)
                    one_line = False
                    i -= len(pending) - 1
                    line_no = pending_start + 1
                    pending = []
                    continue
            line = lines[i]
            i += 1
            if pending:
                pending.append(line)
                line_no += 1
                if line.count(self.quote) % 2:
                    records.append(b"".join(pending))
                    starts.append(pending_start)
                    one_line = False
                    pending = []
                continue
            if line in _BLANK:
                self.blank_lines += 1
            elif line.count(self.quote) % 2:
                pending = [line]
                pending_start = line_no
            else:
                records.append(line)
                starts.append(line_no)
            line_no += 1
        return Batch(records, starts, one_line, b"".join(records)), line_no


def _has_blank(lines: list[bytes]) -> bool:
    return any(lines.count(blank) for blank in _BLANK)

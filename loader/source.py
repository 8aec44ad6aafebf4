"""A CSV file read as batches of records: the raw bytes exactly as read, with their line numbers.

A record is one line, or several when a quoted field holds a line break
(quote characters balance). Blank lines carry no data: they are skipped but
keep their place in the line numbering. A quote left open at the end of the
file would swallow every following line, so the record is cut back to its
first line (which the database then reports as unterminated) and reading
resumes on the next line.

A line ends at LF, CRLF or a lone CR (old Mac files), wherever it comes in
the file. COPY wants one kind of line end per statement, so a batch whose
lines do not all end alike is sent with every record's end made LF; the
records themselves (what the report shows) stay exactly as read.

A UTF-8 byte order mark at the start (spreadsheets' "CSV UTF-8") is not
data: it is left out, whether or not the first line is a header.

The common case (no quote character, no blank line, no CR, or CRLF on every
line) costs a few C-level passes over the batch: no Python work per line.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path

_BOM = b"\xef\xbb\xbf"
_BLANK = (b"\n", b"\r\n", b"\r")
# One line with its end: LF, CRLF or a lone CR; or the last line, without one.
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


@dataclass
class Batch:
    """Consecutive records of one file; lines[i] is the line where records[i] starts."""

    records: list[bytes]
    lines: Sequence[int]
    # True when every record is one line with balanced quotes: only then does
    # PostgreSQL's "line N" in an error name the Nth record of a COPY.
    one_line_records: bool
    data: bytes
    # The records as COPY gets them: the same bytes, but every record ending in
    # LF when the batch mixes line ends (rows is records when it does not).
    rows: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = self.records

    def __len__(self) -> int:
        return len(self.records)


class CsvSource:
    """Reads path in batches of at most batch_size records, after `skip` lines kept aside."""

    def __init__(self, path: Path, quote: bytes, skip: int, batch_size: int) -> None:
        self.path = path
        self.quote = quote
        self.batch_size = batch_size
        self.blank_lines = 0
        # Records that span several lines (a quoted field holding a line break, or a
        # stray quote character), and the lines of the first of them.
        self.spanning_records = 0
        self.first_spanning: tuple[int, int] | None = None
        self._file: BufferedReader = open(path, "rb")  # noqa: SIM115 - closed by __exit__
        bom = self._file.peek(len(_BOM))[:len(_BOM)] == _BOM
        if bom:
            self._file.read(len(_BOM))
        self._pending: deque[bytes] = deque()  # lines split off a CR-ended line, not yet read
        self._joined: bytes | None = None
        self._mixed = False
        self.skipped_lines = self._read(skip)
        self.bytes_read = sum(map(len, self.skipped_lines)) + (len(_BOM) if bom else 0)
        self._line_no = len(self.skipped_lines) + 1

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def _read(self, count: int) -> list[bytes]:
        """Up to count lines of the file, each with its line end as read. When they are
        one chunk read as is, self._joined holds them joined (the batch's data)."""
        lines: list[bytes] = []
        self._joined = None
        self._mixed = False  # whether the lines mix line ends (COPY would refuse them)
        while len(lines) < count:
            if self._pending:
                self._mixed = True  # split off a line with a lone CR
                take = min(count - len(lines), len(self._pending))
                lines.extend(self._pending.popleft() for _ in range(take))
                continue
            # Reading splits at LF only; a line holding a lone CR is several lines.
            chunk = list(itertools.islice(self._file, count - len(lines)))
            if not chunk:
                break
            joined = b"".join(chunk)
            crs = joined.count(b"\r") if b"\r" in joined else 0
            crlfs = joined.count(b"\r\n") if crs else 0
            if crs and crlfs != joined.count(b"\n"):  # CRLF here, LF there
                self._mixed = True
            if crs != crlfs:  # a lone CR ends a line
                self._mixed = True
                chunk = [piece for line in chunk
                         for piece in (_LINE.findall(line) if _lone_cr(line) else (line,))]
                room = count - len(lines)
                self._pending.extend(chunk[room:])
                chunk = chunk[:room]
            elif not lines and len(chunk) == count:
                self._joined = joined
            lines.extend(chunk)
        return lines

    def batches(self) -> Iterator[Batch]:
        while True:
            lines = self._read(self.batch_size)
            if not lines:
                return
            data = self._joined if self._joined is not None else b"".join(lines)
            self.bytes_read += len(data)
            first = self._line_no
            if self.quote not in data and not _has_blank(lines):
                self._line_no += len(lines)
                if self._mixed:
                    rows = [_lf(line) for line in lines]
                    yield Batch(lines, range(first, self._line_no), True, b"".join(rows), rows)
                else:
                    yield Batch(lines, range(first, self._line_no), True, data)
                continue
            batch, self._line_no = self._grouped(lines, first)
            if batch.records:
                if _mixed_ends(batch.data):
                    batch.rows = [_lf(record) for record in batch.records]
                    batch.data = b"".join(batch.rows)
                yield batch

    def _grouped(self, lines: list[bytes], line_no: int) -> tuple[Batch, int]:
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
                more = self._read(1)
                if more:
                    self.bytes_read += len(more[0])
                    lines.append(more[0])
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
                    self.spanning_records += 1
                    self.first_spanning = self.first_spanning or (pending_start, line_no - 1)
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


def _lone_cr(line: bytes) -> bool:
    """Whether the line (as split at LF) holds a CR that is not its CRLF end."""
    crs = line.count(b"\r")
    return crs > 1 or (crs == 1 and not line.endswith(b"\r\n"))


def _mixed_ends(data: bytes) -> bool:
    """Whether COPY would refuse data for its line ends: anything but LF everywhere
    or CRLF everywhere (a CR or LF inside a quoted field counts too: then every
    record's end is made LF, which leaves quoted line breaks as they are)."""
    if b"\r" not in data:
        return False
    return not data.count(b"\r") == data.count(b"\r\n") == data.count(b"\n")


def _lf(record: bytes) -> bytes:
    """The record with its line end made LF."""
    if record.endswith(b"\r\n"):
        return record[:-2] + b"\n"
    if record.endswith(b"\r"):
        return record[:-1] + b"\n"
    return record


def split_fields(text: str, delimiter: str, quote: str, strict: bool = False) -> list[str]:
    """The fields of one record as Python's csv module reads them, whatever their size
    (the module refuses fields over 128 KiB unless told otherwise; COPY takes them)."""
    if len(text) >= csv.field_size_limit():
        csv.field_size_limit(len(text) + 1)
    rows = list(csv.reader([text], delimiter=delimiter, quotechar=quote, strict=strict))
    return rows[0] if rows else []


_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def looks_like_data(line: bytes, delimiter: str, quote: str) -> bool:
    """Whether a line read as a header holds a plain number: a header names its columns,
    while every row of metro's tables and functions holds an id or an amount."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    return any(_PLAIN_NUMBER.fullmatch(field.strip())
               for field in split_fields(text, delimiter, quote))

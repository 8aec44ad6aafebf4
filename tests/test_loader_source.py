"""How the loader cuts a CSV file into records: line numbers, quotes, blank lines."""

from __future__ import annotations

from pathlib import Path

from metro.loader.source import CsvSource


def records(tmp_path: Path, content: bytes, batch_size: int = 3, skip: int = 0):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with CsvSource(path, b'"', skip, batch_size) as source:
        batches = list(source.batches())
        return ([(line, raw) for batch in batches
                 for line, raw in zip(batch.lines, batch.records, strict=True)],
                [batch.one_line_records for batch in batches], source)


def test_plain_lines_keep_their_numbers_across_batches(tmp_path):
    found, plain, source = records(tmp_path, b"h\n1,a\n2,b\n3,c\n4,d", skip=1)
    assert found == [(2, b"1,a\n"), (3, b"2,b\n"), (4, b"3,c\n"), (5, b"4,d")]
    assert plain == [True, True]
    assert source.skipped_lines == [b"h\n"]
    assert source.bytes_read == len(b"h\n1,a\n2,b\n3,c\n4,d")


def test_blank_lines_are_skipped_but_counted(tmp_path):
    found, _, source = records(tmp_path, b"1,a\n\n\r\n2,b\r\n", batch_size=10)
    assert found == [(1, b"1,a\n"), (4, b"2,b\r\n")]
    assert source.blank_lines == 2


def test_a_quoted_line_break_joins_lines_even_across_a_batch_end(tmp_path):
    found, plain, _ = records(tmp_path, b'1,"a\n\nb"\n2,"x,y"\n3,c\n', batch_size=2)
    assert found == [(1, b'1,"a\n\nb"\n'), (4, b'2,"x,y"\n'), (5, b"3,c\n")]
    assert plain == [False, True]


def test_an_unterminated_quote_swallows_only_its_own_line(tmp_path):
    found, plain, _ = records(tmp_path, b'1,a\n2,"b\n3,c\n4,d\n', batch_size=10)
    assert found == [(1, b"1,a\n"), (2, b'2,"b\n'), (3, b"3,c\n"), (4, b"4,d\n")]
    assert plain == [False]

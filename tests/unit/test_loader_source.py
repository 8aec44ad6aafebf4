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


def batches(tmp_path: Path, content: bytes, batch_size: int = 3, skip: int = 0):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with CsvSource(path, b'"', skip, batch_size) as source:
        return list(source.batches()), source


def test_a_lone_cr_ends_a_line_and_copy_gets_lf(tmp_path):
    found, plain, source = records(tmp_path, b"h\r1,a\r2,b\r\r3,c", skip=1)
    assert found == [(2, b"1,a\r"), (3, b"2,b\r"), (5, b"3,c")]
    assert source.skipped_lines == [b"h\r"]
    assert source.blank_lines == 1
    found, _, _ = records(tmp_path, b"1,a\r2,b\n3,c\r\n4,d", batch_size=10)
    assert found == [(1, b"1,a\r"), (2, b"2,b\n"), (3, b"3,c\r\n"), (4, b"4,d")]
    sent, _ = batches(tmp_path, b"1,a\r2,b\n3,c\r\n4,d", batch_size=10)
    assert sent[0].data == b"1,a\n2,b\n3,c\n4,d"


def test_consistent_line_ends_go_to_copy_as_read(tmp_path):
    for content in (b"1,a\r\n2,b\r\n3,c", b"1,a\n2,b\n", b'1,"a\r\nb"\r\n2,c\r\n'):
        sent, _ = batches(tmp_path, content, batch_size=10)
        assert sent[0].data == content
        assert sent[0].rows is sent[0].records


def test_quoted_line_breaks_stay_as_they_are(tmp_path):
    sent, _ = batches(tmp_path, b'1,"a\rb"\r2,"c\nd"\n3,e\r', batch_size=10)
    assert [(list(batch.lines), batch.records) for batch in sent] == [
        ([1, 3, 5], [b'1,"a\rb"\r', b'2,"c\nd"\n', b"3,e\r"])]
    assert sent[0].data == b'1,"a\rb"\n2,"c\nd"\n3,e\n'
    sent, _ = batches(tmp_path, b'1,"a\rb"\r2,"c\nd"\n3,e\r', batch_size=2)
    assert [(list(batch.lines), batch.data) for batch in sent] == [
        ([1], b'1,"a\rb"\n'), ([3], b'2,"c\nd"\n'), ([5], b"3,e\n")]

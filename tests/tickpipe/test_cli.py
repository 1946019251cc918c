"""The tickpipe command line, run as a user would (a subprocess where it matters)."""

import subprocess
import sys

import pyarrow.parquet as pq

import normalize
from ingest.simulator import write_binaryfile
from tickpipe.cli import main


def _session(tmp_path, n=20_000, name="03152024.NASDAQ_ITCH50"):
    path = tmp_path / name
    write_binaryfile(path, n, 20, seed=3, date="2024-03-15")
    return path


def test_inspect_prints_counts_by_type_instruments_and_time_range(tmp_path, capsys):
    path = _session(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    raw = normalize.read_itch_raw(path)
    assert f"{len(raw['A']):,}" in out and "add_order" in out
    assert "20 locates seen" in out
    assert "09:30:00" in out or "03:00:00" in out
    assert f"{path.stat().st_size:,}" in out


def test_decode_writes_parquet_per_schema_equal_to_read_itch(tmp_path, capsys):
    path = _session(tmp_path)
    out = tmp_path / "out"
    assert main(["decode", str(path), "--out", str(out)]) == 0
    want = normalize.read_itch(path)
    for key, table in want.items():
        got = pq.read_table(out / f"{key}.parquet")
        assert got.equals(table), key
    assert "decoded" in capsys.readouterr().out


def test_decode_of_a_truncated_file_exits_2_naming_the_offset(tmp_path):
    path = _session(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "03152024.NASDAQ_ITCH50.cut"
    bad.write_bytes(data[:-5])
    r = subprocess.run([sys.executable, "-m", "tickpipe.cli", "decode", str(bad), "--out",
                        str(tmp_path / "o"), "--date", "2024-03-15"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "byte offset" in r.stderr and str(bad) in r.stderr


def test_decode_without_a_date_says_which_is_missing(tmp_path, capsys):
    path = _session(tmp_path, name="session.itch")
    assert main(["decode", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "session date is missing" in err and "session.itch" in err


def test_book_writes_the_book_after_every_order_event_equal_to_book_itch(tmp_path, capsys):
    from kernels.book_itch import book_itch
    path = _session(tmp_path)
    out = tmp_path / "books" / "book.parquet"
    assert main(["book", str(path), "--out", str(out), "--levels", "3"]) == 0
    want = book_itch(path, levels=3)
    got = pq.read_table(out)
    assert got.num_rows == want.num_rows > 10_000
    assert got.equals(want.replace_schema_metadata(got.schema.metadata))
    text = capsys.readouterr().out
    assert f"after each of {want.num_rows:,} order events for 20 instruments" in text
    # the report, known only at the end of the stream, is in the file's footer
    from kernels.book import book_report
    assert book_report(out) == book_report(want)
    assert book_report(out).events == want.num_rows


def test_book_of_a_truncated_file_exits_2_naming_the_offset(tmp_path):
    path = _session(tmp_path)
    bad = tmp_path / "cut.itch"
    bad.write_bytes(path.read_bytes()[:-5])
    r = subprocess.run([sys.executable, "-m", "tickpipe.cli", "book", str(bad), "--out",
                        str(tmp_path / "b.parquet"), "--date", "2024-03-15"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "byte offset" in r.stderr and str(bad) in r.stderr

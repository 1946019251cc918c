"""``tickpipe store ls|info|query|sql|compact|verify`` on a small store."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet  # noqa: F401
import pytest

from tickpipe.cli import main
from tickstore import TickStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.tickstore.test_store import definitions, mbo  # noqa: E402


@pytest.fixture
def root(tmp_path):
    with TickStore(tmp_path / "s", slot="1D") as s:
        s.append("definitions", definitions(0, {"AAPL": 3, "MSFT": 4}))
        for k in range(3):
            s.append("mbo", mbo(1000, seed=k, instruments=6))
    return tmp_path / "s"


def test_ls_info_query_sql(root, capsys, tmp_path):
    assert main(["store", "ls", str(root), "--schema", "mbo"]) == 0
    out = capsys.readouterr().out
    assert out.count("mbo/date=2024-10-04/part-") == 3
    assert main(["store", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "3,000" in out and "definitions" in out and "2024-10-04: 2" in out
    assert main(["store", "query", str(root), "mbo", "--symbols", "AAPL", "--columns",
                 "ts_event", "price", "action", "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ts_event", "price", "action"] and out[1].split()[-1] == "A"
    n = TickStore(root, writer=False).read("mbo", instruments=[3]).num_rows
    assert f"{n:,} rows in all" in out[-1]
    first = TickStore(root, writer=False).read("mbo", instruments=[3]).column("ts_event")[0]
    ns = first.cast(pa.int64()).as_py()
    assert main(["store", "query", str(root), "mbo", "--instruments", "3", "--start", str(ns),
                 "--end", str(ns + 1), "--columns", "sequence"]) == 0
    lines = capsys.readouterr().out.splitlines()           # ns given as digits: that row
    assert lines[0].split() == ["sequence"] and len(lines) >= 2
    dest = tmp_path / "aapl.parquet"
    assert main(["store", "query", str(root), "mbo", "--instruments", "3", "--out", str(dest)]) == 0
    assert pa.parquet.read_table(dest).num_rows == n
    assert f"wrote {n:,} rows" in capsys.readouterr().out
    assert main(["store", "sql", str(root), "SELECT instrument_id, count(*) AS n FROM mbo "
                 "GROUP BY ALL ORDER BY n DESC LIMIT 2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["instrument_id", "n"] and len(out) == 3


def test_compact_then_verify_and_errors(root, capsys):
    assert main(["store", "compact", str(root)]) == 0
    assert "compacted 1 day(s)" in capsys.readouterr().out
    assert len(TickStore(root, writer=False).files("mbo")) == 1
    assert main(["store", "verify", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    f = next((root / "mbo").rglob("part-*.parquet"))
    raw = bytearray(f.read_bytes())
    raw[100] ^= 1
    f.write_bytes(bytes(raw))
    assert main(["store", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"problem: {f.relative_to(root).as_posix()}: CRC-32" in out and "FAILED" in out
    assert main(["store", "query", str(root), "mbo", "--symbols", "GOOG"]) == 2
    assert "Unknown symbol(s) ['GOOG']" in capsys.readouterr().err
    assert main(["store", "query", str(root), "quotes"]) == 2
    assert "Unknown schema 'quotes'" in capsys.readouterr().err


def test_a_second_writer_from_the_shell_gets_a_clear_error(root):
    with TickStore(root):
        r = subprocess.run([sys.executable, "-m", "tickpipe.cli", "store", "compact", str(root)],
                           capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2 and "has a writer already" in r.stderr
    assert np.all(TickStore(root, writer=False).read("mbo").column("size").to_numpy() > 0)

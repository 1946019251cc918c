"""kernels.forecast: bar mids to returns, forecast tables to ``forecasts`` records."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kernels.forecast import garch11, mid_returns, to_records
from normalize import records as R


def test_mid_returns_are_log_changes_between_an_instruments_bars_with_a_mid():
    bars = pa.table({
        "instrument_id": pa.array([2, 1, 2, 1, 2, 1, 2], pa.uint32()),
        "bar_start": pa.array(np.arange(7) * 60 * 10**9, pa.timestamp("ns", tz="UTC")),
        "mid": [10.0, 5.0, np.nan, 5.5, 11.0, 5.0, 12.1]})
    got = mid_returns(bars).to_pandas()
    df = bars.to_pandas().dropna(subset=["mid"])
    want = []
    for i, g in df.groupby("instrument_id", sort=True):
        lr = np.log(g["mid"]).diff().iloc[1:] * 1e4
        want += [(i, t, v) for t, v in zip(g["bar_start"].iloc[1:], lr)]
    assert len(got) == len(want) == 4
    for (i, t, v), r in zip(want, got.itertuples(index=False)):
        assert (r.instrument_id, r.bar_start) == (i, t)
        assert r[2] == pytest.approx(v, rel=1e-12)


def test_a_garch_table_becomes_forecast_records_in_their_own_schema():
    rng = np.random.default_rng(2)
    fit = garch11(rng.standard_normal((3, 300)), device="cpu")
    rec = to_records(fit, model="G", target="V", ts_event=1_700_000_000 * 10**9,
                     value="variance_forecast")
    assert rec.schema.equals(R.arrow_schema("forecasts"), check_metadata=True)
    back = R.from_arrow("forecasts", rec)
    assert back["value"].tolist() == fit.column("variance_forecast").to_pylist()
    assert set(back["model"].tolist()) == {b"G"} and set(back["target"].tolist()) == {b"V"}
    assert back["instrument_id"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="model"):
        to_records(fit, model="X", target="V", ts_event=0, value="variance_forecast")

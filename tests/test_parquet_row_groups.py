"""Counting a subject in a plain Parquet file reads only the row groups whose min/max
statistics admit one of the keys, and counts exactly what a full read counts."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.keymatch import admitted_row_groups
from connectors.parquet import ParquetConnector


def test_statistics_rule_row_groups_out_and_counts_stay_exact(tmp_path):
    f = tmp_path / "export.parquet"
    ids = list(range(1, 10_001))                     # sorted: 10 row groups of 1,000 ids
    pq.write_table(pa.table({"entity_id": pa.array(ids, pa.int64()),
                             "email": [f"user{i}@example.com" for i in ids]}),
                   f, row_group_size=1000)
    pf = pq.ParquetFile(f)
    assert admitted_row_groups(pf, "entity_id", [42]) == ([0], 9)
    assert admitted_row_groups(pf, "entity_id", [42, 5500, 99_999]) == ([0, 5], 8)
    assert admitted_row_groups(pf, "entity_id", [0, 20_000]) == ([], 10)
    # strings compare as text: "user5500@..." sorts between the row groups' bounds
    admitted, _ = admitted_row_groups(pf, "email", ["user5500@example.com"])
    assert 5 in admitted
    # a row group without statistics is always read
    g = tmp_path / "nostats.parquet"
    pq.write_table(pa.table({"entity_id": pa.array(ids, pa.int64())}), g, row_group_size=1000,
                   write_statistics=False)
    assert admitted_row_groups(pq.ParquetFile(g), "entity_id", [42]) == (list(range(10)), 0)

    c = ParquetConnector()
    counted = c.count("file", str(f), "entity_id", [42, 5500, 99_999])
    assert counted.rows == {42: 1, 5500: 1, 99_999: 0}
    by_email = c.count("file", str(f), "email", ["user42@example.com", "nobody@example.com"])
    assert by_email.rows == {"user42@example.com": 1, "nobody@example.com": 0}
    res = c.erase("file", str(f), "entity_id", [42, 5500], tag="t")
    assert res.rows_deleted == 2
    left = pq.ParquetFile(f).read().column("entity_id").to_pylist()
    assert left == [i for i in ids if i not in (42, 5500)]

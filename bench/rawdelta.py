"""The raw deltalake side of the Delta benchmarks: what a hand-written erasure does, the same
in every benchmark (bench_delta_erasure.py, bench_cost_curve.py), imported by their child
processes (which run with the repository as their working directory)."""

from __future__ import annotations


def merge_delete(path: str, col: str, ids: list, typ=None) -> int:
    """One MERGE deleting every row whose `col` is one of `ids`; the rows deleted."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from connectors.keymatch import array_of

    dt = DeltaTable(path)
    if typ is None:
        typ = pa.schema(dt.schema().to_arrow()).field(col).type
    # array_of is pa.array without its pandas import (0.5 s): the raw side is not charged
    # for a cost the engine avoids
    m = (dt.merge(pa.table({"k": array_of(ids, typ)}), predicate=f't."{col}" = s.k',
                  source_alias="s", target_alias="t", streamed_exec=False)
         .when_matched_delete().execute())
    return m["num_target_rows_deleted"]


def purge(path: str) -> None:
    """VACUUM with retention 0, then a checkpoint and log cleanup with retention 0."""
    from deltalake import DeltaTable

    dt = DeltaTable(path)
    dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    dt.alter.set_table_properties({"delta.logRetentionDuration": "interval 0 seconds",
                                   "delta.deletedFileRetentionDuration": "interval 0 seconds"})
    dt = DeltaTable(path)
    dt.create_checkpoint()
    dt.cleanup_metadata()


def parquet_rewrite(path: str, col: str, ids: list) -> int:
    """A plain Parquet file without the rows whose `col` is one of `ids`: read, filter,
    write a new file, rename it over the old one (what the engine's Parquet connector does
    for the sample lake's export). The rows removed."""
    import os

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from connectors.keymatch import array_of

    t = pq.ParquetFile(path).read()
    keep = pc.invert(pc.is_in(t.column(col), value_set=array_of(ids, t.schema.field(col).type)))
    kept = t.filter(keep)
    pq.write_table(kept, path + ".tmp")
    os.replace(path + ".tmp", path)
    return t.num_rows - kept.num_rows

"""The raw deltalake side of the Delta benchmarks: what a hand-written erasure does, the same
in every benchmark (bench_delta_erasure.py, bench_cost_curve.py), imported by their child
processes (which run with the repository as their working directory)."""

from __future__ import annotations


def merge_delete(path: str, col: str, ids: list, typ=None) -> int:
    """One MERGE deleting every row whose `col` is one of `ids`; the rows deleted."""
    import pyarrow as pa
    from deltalake import DeltaTable

    dt = DeltaTable(path)
    if typ is None:
        typ = pa.schema(dt.schema().to_arrow()).field(col).type
    m = (dt.merge(pa.table({"k": pa.array(ids, type=typ)}), predicate=f't."{col}" = s.k',
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

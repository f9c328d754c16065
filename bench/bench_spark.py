"""Benchmark: the Spark path against the deltalake path, on the same table.

Builds one Delta table as bench_cost_curve.py does (int64 key `user_id`, about 10 rows per
user, BENCH_COMMITS (20) commits of one sorted key range each: clustered by key; BENCH_ROWS
rows, default 3,000,000, e.g. BENCH_ROWS=300000 for a quick run), starts a Sail Spark Connect
server (`pysail`, no JVM) in a process of its own on 127.0.0.1, and erases the same
BENCH_SUBJECTS (1,000) user ids, drawn over the whole key range, from four identical copies,
each in a fresh child process (wall time and peak RSS measured inside the child, imports
included, as bench_delta_erasure.py does):

  engine, deltalake  `erasure run --pending`, config without [spark]: plan (count + residue
                     scan), deltalake MERGE, purge, verify, ledger
  engine, Spark      the same with `[spark] remote = "sc://..."`: the counts and the MERGE run
                     on the Sail server; residue scan, purge and verification's scan here
  raw deltalake      deltalake MERGE delete + VACUUM 0 + checkpoint + log cleanup
                     (bench/rawdelta.py)
  raw Spark          through pyspark-client against the same server: the keys as a DataFrame
                     in a temporary view, `MERGE INTO delta.`t` t USING <view> s ON ... WHEN
                     MATCHED THEN DELETE`, then the same deltalake purge (Sail has no VACUUM)

The Sail server's own CPU time and memory are NOT in the children's figures: its CPU seconds
(utime + stime from /proc) and its peak RSS (VmHWM, reset before each side where the kernel
allows) are printed apart for the two Spark sides. The server shares the machine's cores
with the child while it works.

BENCH_REPEAT (default 3) repeats all four on fresh copies (the order rotates) and keeps each
side's fastest run (peak RSS: the largest). Checks that every side deleted the same rows and
left the same table. BENCH_DIR is the scratch folder (default ./bench_spark, removed unless
BENCH_KEEP=1). Prints; asserts nothing about speed.

`bench_spark.py scale` measures instead the per-unit figures docs/scaling.md extrapolates
from: the same BENCH_ROWS rows in BENCH_FILES (100) files laid out clustered by key,
unclustered, unclustered without statistics, and Z-ordered; per layout the key column's
bytes, footer read time, the engine's residue scan (row groups read) for 1, 1,000 and 10,000
keys, and one MERGE delete per engine (deltalake, Sail) with the files the log's statistics
admit and the files and bytes rewritten; the log's scan cost per add action
(BENCH_COMMITS_LOG, 1,000 commits); LIST and the engine's object-prefix scan on moto's S3
server (BENCH_S3=0 to skip, BENCH_LIST objects). Writes BENCH_DIR/scale.json (default
./bench_scale, kept).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_curve import COUNT, GEN, ROOT, PY, erasure, spawn, write_config  # noqa: E402
from bench_delta_erasure import child  # noqa: E402

# The Sail server: started in a process of its own (the parent stays small, so the children
# inherit no peak RSS from it), its address on stdout, stopped when stdin closes.
SERVER = r'''
import sys
from pysail.spark import SparkConnectServer
server = SparkConnectServer("127.0.0.1", 0)
server.start(background=True)
host, port = server.listening_address
print(f"sc://{host}:{port}", flush=True)
sys.stdin.read()
server.stop()
'''

SIDES = ("engine_delta", "engine_spark", "raw_delta", "raw_spark")
LABELS = {"engine_delta": "erasure run --pending, deltalake path (no [spark])",
          "engine_spark": "erasure run --pending, Spark path ([spark] remote)",
          "raw_delta": "raw deltalake MERGE + purge (bench/rawdelta.py)",
          "raw_spark": "raw Spark MERGE INTO ... USING <view> + deltalake purge"}


class Sail:
    """The Sail server process, and its CPU seconds and peak RSS from /proc."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([PY, "-c", SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)
        self.remote = self.proc.stdout.readline().strip()
        if not self.remote.startswith("sc://"):
            self.stop()
            sys.exit("the Sail server did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def memory_mb(self, key: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def reset_peak(self) -> bool:
        try:        # "5" resets the process's peak RSS (VmHWM) to its current RSS
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def raw_spark(remote: str, path: str, col: str, ids: list[int]) -> None:
    """Raw Spark, in a child process of its own (`bench_spark.py raw-spark ...`: pyspark's
    Connect client refuses to load in a `python -c` process, taking it for a doctest run):
    what a hand-written erasure through Spark Connect does, then the deltalake purge."""
    import resource

    t0 = time.perf_counter()
    import pyarrow as pa
    from deltalake import DeltaTable
    from pyspark.sql import SparkSession

    from rawdelta import purge

    spark = SparkSession.builder.remote(remote).getOrCreate()
    t1 = time.perf_counter()
    spark.createDataFrame(pa.table({"k": pa.array(ids, pa.int64())})).createOrReplaceTempView("keys")
    before = DeltaTable(path).version()
    spark.sql(f"MERGE INTO delta.`{path}` t USING keys s ON t.`{col}` = s.k "
              "WHEN MATCHED THEN DELETE").collect()
    t2 = time.perf_counter()
    (h,) = [h for h in DeltaTable(path).history()
            if h.get("version", -1) > before and h["operation"] == "MERGE"]
    purge(path)
    t3 = time.perf_counter()
    spark.stop()
    print("RESULT " + json.dumps({
        "rows_deleted": int(h["operationMetrics"]["numTargetRowsDeleted"]),
        "engine_info": h.get("engineInfo"), "connect_seconds": t1 - t0,
        "merge_seconds": t2 - t1, "purge_seconds": t3 - t2, "seconds": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def engine(args: list[str]) -> None:
    """`erasure ...` in this child process (not `python -c`, for the reason above), timed
    inside it."""
    import contextlib
    import io
    import resource

    t0 = time.perf_counter()
    from erasure.cli import run_cli

    with contextlib.redirect_stdout(io.StringIO()):
        code = run_cli(args)
    print("RESULT " + json.dumps({
        "exit": code, "seconds": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    sys.exit(code)


def warm_up(remote: str, path: str) -> None:
    from pyspark.sql import SparkSession

    SparkSession.builder.remote(remote).getOrCreate().sql(
        f"SELECT count(*) FROM delta.`{path}`").collect()


def run_side(side: str, d: Path, remote: str, ids: list[int]) -> dict:
    table = str(d / "tables" / "events")
    if side.startswith("engine"):
        return spawn([PY, __file__, "engine", "--config", str(d / "erasure.toml"), "run",
                      "--pending"], side)
    if side == "raw_delta":
        return child("raw-merge", {"tables": [(table, "user_id")], "ids": ids, "purge": True})
    return spawn([PY, __file__, "raw-spark", json.dumps([remote, table, "user_id", ids])],
                 "raw Spark")


def main() -> None:
    rows = int(os.environ.get("BENCH_ROWS", "3000000"))
    n_subjects = int(os.environ.get("BENCH_SUBJECTS", "1000"))
    commits = int(os.environ.get("BENCH_COMMITS", "20"))
    repeat = max(1, int(os.environ.get("BENCH_REPEAT", "3")))
    base = Path(os.environ.get("BENCH_DIR", ROOT / "bench_spark")).resolve()
    if base.exists():
        shutil.rmtree(base)
    pristine = base / "pristine"
    pristine.mkdir(parents=True)
    t0 = time.perf_counter()
    users = spawn([PY, "-c", GEN, str(pristine), str(rows), str(commits), "0", "7"],
                  "generate")["result"]["users"]
    gen_s = time.perf_counter() - t0
    ids = sorted(random.Random(1).sample(range(1, users + 1), min(n_subjects, users)))
    ids_file = base / "ids.txt"
    ids_file.write_text("\n".join(map(str, ids)) + "\n")
    names = [("tables/events", "user_id")]
    (before,) = spawn([PY, "-c", COUNT, json.dumps([(str(pristine / names[0][0]), "user_id")]),
                       json.dumps(ids)], "count")["result"]
    print(f"table: {before['rows']:,} rows, {before['files']} files ({commits} commits clustered "
          f"by key), {users:,} users; {before['rows_with_ids']:,} rows hold the {len(ids):,} ids; "
          f"built in {gen_s:.1f} s", flush=True)

    sail = Sail()
    runs: dict[str, list[dict]] = {s: [] for s in SIDES}
    try:
        # one query first, so that neither Spark side pays the server's first-query start
        warm = spawn([PY, __file__, "warm-up", sail.remote, str(pristine / "tables" / "events")],
                     "warm-up query")
        print(f"Sail server at {sail.remote} (pid {sail.proc.pid}); warm-up query "
              f"{warm['seconds']:.2f} s", flush=True)
        for i in range(repeat):
            dirs = {s: base / s for s in SIDES}
            for s, d in dirs.items():
                if d.exists():
                    shutil.rmtree(d)
                shutil.copytree(pristine / "tables", d / "tables")
                if s.startswith("engine"):
                    cfg = write_config(d, names)
                    if s == "engine_spark":
                        with cfg.open("a") as f:
                            f.write(f'\n[spark]\nremote = "{sail.remote}"\n')
                    spawn(erasure(cfg, "request", "submit", "--subjects-file", str(ids_file)),
                          "submit")
            order = SIDES[i % 4:] + SIDES[:i % 4]   # rotate: a neighbour's load falls on all
            for s in order:
                peak_reset = sail.reset_peak()
                cpu0 = sail.cpu_seconds()
                r = run_side(s, dirs[s], sail.remote, ids)
                r["sail_cpu_seconds"] = sail.cpu_seconds() - cpu0
                r["sail_peak_mb"] = sail.memory_mb("VmHWM") if peak_reset else float("nan")
                runs[s].append(r)
            after = spawn([PY, "-c", COUNT, json.dumps([(str(dirs[s] / names[0][0]), "user_id")
                                                        for s in SIDES]), json.dumps(ids)],
                          "count")["result"]
            deleted = {s: runs[s][-1].get("rows_deleted") for s in ("raw_delta", "raw_spark")}
            bad = [s for s, c in zip(SIDES, after)
                   if c["rows_with_ids"] or c["rows"] != before["rows"] - before["rows_with_ids"]]
            if bad or set(deleted.values()) != {before["rows_with_ids"]}:
                sys.exit(f"the sides disagree: {bad} left rows of the ids or a different table; "
                         f"raw rows deleted {deleted}, expected {before['rows_with_ids']}")
            print(f"  run {i + 1}: " + ", ".join(f"{s} {runs[s][-1]['seconds']:.2f} s"
                                                   for s in SIDES), flush=True)
        sail_rss = sail.memory_mb("VmRSS")
    finally:
        sail.stop()

    best = {s: min(runs[s], key=lambda r: r["seconds"]) for s in SIDES}
    peak = {s: max(r["peak_rss_mb"] for r in runs[s]) for s in SIDES}
    print(f"\n{len(ids):,} subjects ({before['rows_with_ids']:,} rows) erased from one Delta table "
          f"of {before['rows']:,} rows in {before['files']} files; each side in its own process, "
          f"time and peak RSS measured inside it (imports included), best of {repeat}:")
    for s in SIDES:
        print(f"  {LABELS[s]:58} {best[s]['seconds']:7.2f} s   peak RSS {peak[s]:6.0f} MB")
    rs = best["raw_spark"]
    print(f"  (raw Spark: imports + connect {rs['connect_seconds']:.2f} s, MERGE on the server "
          f"{rs['merge_seconds']:.2f} s, deltalake purge {rs['purge_seconds']:.2f} s; the MERGE "
          f"commit's engineInfo: {rs['engine_info']})")
    print("\nthe Sail server's own work, NOT in the figures above (a separate process; its CPU "
          "seconds during each side, its peak RSS during it):")
    for s in ("engine_spark", "raw_spark"):
        print(f"  {LABELS[s]:58} {best[s]['sail_cpu_seconds']:7.2f} s CPU  peak RSS "
              f"{best[s]['sail_peak_mb']:6.0f} MB")
    print(f"  (server RSS at the end {sail_rss:.0f} MB; during the deltalake sides it used "
          f"{max(r['sail_cpu_seconds'] for s in ('engine_delta', 'raw_delta') for r in runs[s]):.2f}"
          " s CPU at most)")
    print("\nratios (same run):")
    for label, a, b in (("Spark path / deltalake path (engine)", "engine_spark", "engine_delta"),
                        ("engine deltalake path / raw deltalake", "engine_delta", "raw_delta"),
                        ("engine Spark path / raw Spark", "engine_spark", "raw_spark"),
                        ("raw Spark / raw deltalake", "raw_spark", "raw_delta")):
        print(f"  {label:40} {best[a]['seconds'] / best[b]['seconds']:5.2f}x")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(base)


# ---- scale probes (`bench_spark.py scale`): the small-scale figures docs/scaling.md uses ----
LAYOUTS = ("clustered", "unclustered", "no stats", "z-ordered")


def _relayout(src: str, out: str, files: int, kind: str) -> None:
    """The clustered table's rows laid out otherwise, in `files` appends: shuffled
    ("unclustered"), shuffled and written without statistics (no Parquet min/max, no Delta
    file stats: "no stats"), or shuffled then `optimize.z_order` on the key and vacuumed
    ("z-ordered": what liquid clustering or Z-ORDER leaves once OPTIMIZE has run)."""
    import numpy as np
    import pyarrow as pa
    from deltalake import ColumnProperties, DeltaTable, WriterProperties, write_deltalake

    t = pa.concat_tables(pq_read(f) for f in DeltaTable(src).file_uris())
    t = t.take(pa.array(np.random.default_rng(3).permutation(t.num_rows)))
    kw: dict = {}
    if kind == "no stats":
        kw = {"configuration": {"delta.dataSkippingNumIndexedCols": "0"},
              "writer_properties": WriterProperties(     # SNAPPY: deltalake's default
                  compression="SNAPPY",
                  default_column_properties=ColumnProperties(statistics_enabled="NONE"))}
    for i in range(files):
        lo, hi = t.num_rows * i // files, t.num_rows * (i + 1) // files
        write_deltalake(out, t.slice(lo, hi - lo), mode="append", **kw)
        kw.pop("configuration", None)
    if kind == "z-ordered":
        dt = DeltaTable(out)
        size = sum(os.path.getsize(_local(f))
                   for f in dt.file_uris())
        dt.optimize.z_order(["user_id"], target_size=size // files)
        DeltaTable(out).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)


def _local(uri: str) -> str:
    """A local path from deltalake's file URI."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def pq_read(path: str):
    import pyarrow.parquet as pq

    return pq.ParquetFile(_local(path)).read()


def _best(fn, n: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _layout_facts(root: Path, keysets: dict[int, list[int]]) -> dict:
    """Files, bytes, the key column's share, footer read time and the engine's residue scan
    (connectors/delta/residue.scan_table_folder, no memo) for each number of keys."""
    from bisect import bisect_left

    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from connectors.delta.residue import scan_table_folder

    dt = DeltaTable(str(root))
    live = {os.path.relpath(_local(f), root)
            for f in dt.file_uris()}
    paths = [root / f for f in sorted(live)]
    metas = [pq.ParquetFile(p).metadata for p in paths]
    rows = sum(m.num_rows for m in metas)
    size = sum(p.stat().st_size for p in paths)
    leaf = metas[0].schema.names.index("user_id")
    key_bytes = sum(m.row_group(g).column(leaf).total_compressed_size
                    for m in metas for g in range(m.num_row_groups))
    has_stats = metas[0].row_group(0).column(leaf).statistics is not None
    footer_s, _ = _best(lambda: [pq.ParquetFile(p).metadata for p in paths])
    walk_s, n_walk = _best(lambda: sum(len(fs) for _, _, fs in os.walk(root)))
    res = {"files": len(paths), "objects": n_walk, "rows": rows, "bytes": size,
           "row_groups": sum(m.num_row_groups for m in metas),
           "key_bytes": key_bytes, "footer_bytes": sum(m.serialized_size for m in metas),
           "parquet_stats": has_stats, "footer_ms_per_file": 1000 * footer_s / len(paths),
           "walk_ms_per_1000": 1000 * walk_s / n_walk * 1000, "scan": {}}
    for k, keys in keysets.items():
        secs, sc = _best(lambda: scan_table_folder(root, live, {"user_id"}, keys))
        sk = sorted(keys)
        read_rg = read_bytes = 0
        for m in metas:         # the row groups the scan reads: stats admit a key, or no stats
            for g in range(m.num_row_groups):
                c = m.row_group(g).column(leaf)
                st = c.statistics
                if st is not None and st.has_min_max:
                    j = bisect_left(sk, st.min)
                    if j >= len(sk) or sk[j] > st.max:
                        continue
                read_rg += 1
                read_bytes += c.total_compressed_size
        res["scan"][k] = {"seconds": secs, "row_groups_read": read_rg,
                          "row_groups_skipped": sc.row_groups_skipped,
                          "key_bytes_read": read_bytes,
                          "files_with_key": len({f for fs in sc.live.values() for f in fs})}
    return res


def _merge(path: str, keys: list[int], remote: str | None) -> dict:
    """One MERGE delete of `keys`: deltalake (remote None) or Spark through `remote`; time,
    files scanned/skipped (deltalake) and removed/added, bytes of the files removed."""
    import pyarrow as pa
    from deltalake import DeltaTable

    before = DeltaTable(path)
    sizes = {os.path.basename(f): os.path.getsize(_local(f))
             for f in before.file_uris()}
    # the files the log's statistics admit: delta-rs prunes by `k = v` for one key and by
    # `k >= min AND k <= max` of the batch for more (connectors/delta.md)
    adds = pa.table(before.get_add_actions(flatten=True))
    lo, hi = min(keys), max(keys)
    mins, maxs = (adds.column(c).to_pylist() if c in adds.column_names else [None] * adds.num_rows
                  for c in ("min.user_id", "max.user_id"))
    admitted = sum(1 for a, b in zip(mins, maxs) if a is None or b is None or (a <= hi and b >= lo))
    t0 = time.perf_counter()
    if remote is None:
        m = (before.merge(pa.table({"k": pa.array(keys, pa.int64())}), predicate='t."user_id" = s.k',
                          source_alias="s", target_alias="t", streamed_exec=False)
             .when_matched_delete().execute())
        secs = time.perf_counter() - t0
        out = {"seconds": secs, "rows": m["num_target_rows_deleted"],
               "removed": m["num_target_files_removed"], "added": m["num_target_files_added"]}
    else:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.remote(remote).getOrCreate()
        spark.createDataFrame(pa.table({"k": pa.array(keys, pa.int64())})).createOrReplaceTempView("keys")
        spark.sql(f"MERGE INTO delta.`{path}` t USING keys s ON t.user_id = s.k "
                  "WHEN MATCHED THEN DELETE").collect()
        secs = time.perf_counter() - t0
        spark.stop()
        h = DeltaTable(path).history(1)[0]["operationMetrics"]
        out = {"seconds": secs, "rows": int(h.get("numTargetRowsDeleted", 0)),
               "removed": int(h.get("numTargetFilesRemoved", 0)),
               "added": int(h.get("numTargetFilesAdded", 0))}
    out["stats_admit"] = admitted
    gone = set(sizes) - {
        os.path.basename(f) for f in DeltaTable(path).file_uris()}
    out["bytes_rewritten"] = sum(sizes[g] for g in gone)
    return out


def _s3_probe(table: Path, n_list: int) -> dict:
    """On moto's S3 server (localhost: no network latency; the figures are this process's
    per-request cost, not S3's): LIST time per 1,000 objects, and the engine's object-prefix
    scan (16 threads) of the clustered table for one key."""
    import socket

    import boto3

    from connectors.delta.residue import scan_object_prefix
    from connectors.objectstore import ObjectPrefix

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    proc = subprocess.Popen([str(Path(PY).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                         aws_secret_access_key="test", region_name="us-east-1")
        for _ in range(100):
            try:
                c.create_bucket(Bucket="lake")
                break
            except Exception:
                time.sleep(0.1)
        for f in table.rglob("*"):
            if f.is_file():
                c.upload_file(str(f), "lake", f"t/{f.relative_to(table)}")
        for i in range(n_list):
            c.put_object(Bucket="lake", Key=f"many/{i:06d}", Body=b"x")

        def listing() -> int:
            return sum(len(p.get("Contents", [])) for p in
                       c.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix="many/"))
        list_s, n = _best(listing)
        store = ObjectPrefix("s3://lake/t", {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
                                             "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                                             "AWS_REGION": "us-east-1"})
        from deltalake import DeltaTable
        live = {os.path.basename(f) for f in DeltaTable(str(table)).file_uris()}
        scan_s, sc = _best(lambda: scan_object_prefix(store, live, {"user_id"}, [12345], versions=False))
        return {"list_ms_per_1000": 1000 * list_s / n * 1000, "listed": n,
                "scan_seconds": scan_s, "objects": sc.files_scanned}
    finally:
        proc.terminate()
        proc.wait(10)


def _checkpoint_probe(base: Path, commits: int) -> dict:
    """The engine's scan of a log of `commits` one-file commits and of its checkpoint alone
    (each add action's statistics walked for the key): the per-file cost of the log."""
    import numpy as np
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from connectors.delta.residue import scan_table_folder

    root = base / "log_probe" / "t"
    rng = np.random.default_rng(1)
    for _ in range(commits):
        write_deltalake(str(root), pa.table({"user_id": pa.array(rng.integers(1, 10**6, 10))}),
                        mode="append")
    DeltaTable(str(root)).create_checkpoint()
    # copies of the log alone (JSON commits and checkpoint), and of the checkpoint alone
    log = base / "log_probe" / "log_only" / "_delta_log"
    shutil.copytree(root / "_delta_log", log)
    only = base / "log_probe" / "checkpoint_only" / "_delta_log"
    only.mkdir(parents=True)
    for f in log.glob("*.checkpoint.parquet"):
        shutil.copy(f, only / f.name)
    out = {"commits": commits, "checkpoint_bytes": sum(f.stat().st_size for f in only.iterdir())}
    for what, folder in (("log", log), ("checkpoint", only)):
        secs, _ = _best(lambda: scan_table_folder(folder.parent, set(), {"user_id"}, [123]))
        out[f"{what}_ms_per_add"] = 1000 * secs / commits
    return out


def scale() -> None:
    """The figures docs/scaling.md extrapolates from. BENCH_ROWS (3,000,000) rows in
    BENCH_FILES (100) files, four layouts of the same rows; prints JSON and a summary."""
    import random as rnd

    rows = int(os.environ.get("BENCH_ROWS", "3000000"))
    files = int(os.environ.get("BENCH_FILES", "100"))
    base = Path(os.environ.get("BENCH_DIR", ROOT / "bench_scale")).resolve()
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    users = spawn([PY, "-c", GEN, str(base / "clustered"), str(rows), str(files), "0", "7"],
                  "generate")["result"]["users"]
    tables = {"clustered": base / "clustered" / "tables" / "events"}
    for kind in LAYOUTS[1:]:
        tables[kind] = base / kind.replace(" ", "_")
        _relayout(str(tables["clustered"]), str(tables[kind]), files, kind)
    keysets = {k: sorted(rnd.Random(k).sample(range(1, users + 1), min(k, users)))
               for k in (1, 1000, 10000)}
    out: dict = {"rows": rows, "files": files, "users": users, "layouts": {}}
    sail = Sail()
    try:
        for kind, path in tables.items():
            facts = _layout_facts(path, keysets)
            facts["merge"] = {}
            for engine_name, remote in (("deltalake", None), ("spark", sail.remote)):
                for k, keys in keysets.items():
                    work = base / "merge"
                    if work.exists():
                        shutil.rmtree(work)
                    shutil.copytree(path, work)
                    facts["merge"][f"{engine_name} {k}"] = _merge(str(work), keys, remote)
            out["layouts"][kind] = facts
            print(f"{kind}: " + json.dumps(facts), flush=True)
        out["log"] = _checkpoint_probe(base, int(os.environ.get("BENCH_COMMITS_LOG", "1000")))
        print("log: " + json.dumps(out["log"]), flush=True)
        if os.environ.get("BENCH_S3", "1") == "1":
            out["s3"] = _s3_probe(tables["clustered"], int(os.environ.get("BENCH_LIST", "5000")))
            print("s3 (moto): " + json.dumps(out["s3"]), flush=True)
    finally:
        sail.stop()
    Path(base / "scale.json").write_text(json.dumps(out, indent=1))
    print(f"\nwrote {base / 'scale.json'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["raw-spark"]:
        raw_spark(*json.loads(sys.argv[2]))
    elif sys.argv[1:2] == ["scale"]:
        scale()
    elif sys.argv[1:2] == ["engine"]:
        engine(sys.argv[2:])
    elif sys.argv[1:2] == ["warm-up"]:
        warm_up(*sys.argv[2:4])
    else:
        main()

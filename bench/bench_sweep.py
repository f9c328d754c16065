"""Benchmark: a verification sweep over many erased subjects on a lake of >10 million rows,
next to a DuckDB semi-join of the same subjects over the same Parquet files.

Set-up (untimed): the sample lake is generated, every subject gets a request
(`erasure request submit --subjects-file`) and `erasure run --pending` erases them all
(purge mode: old files vacuumed, log cleaned). Then BENCH_BACK of them (50) are re-ingested:
rows with their ids are appended to the raw table, as a backfill would.

Timed, each in a fresh process:
- the sweep the way `erasure sweep` runs it (`erasure.sweep.run_sweep`: ledger read, subjects
  unsealed, lineage read, every erased key matched in one pass per dataset, findings for the
  hits recorded in the ledger); its matching phase (`planning.measure`) is shown on its own;
- DuckDB counting the same subjects' rows in the same files (the live data files of each
  Delta table and the Parquet export: `read_parquet([...]) SEMI JOIN ids`).
Both report rows found; rows/s is the rows of the four keyed datasets over the seconds.

BENCH_ROWS (default 5,000,000 reviews, about 11 million rows), BENCH_SUBJECTS (100,000),
BENCH_BACK (50) and BENCH_DIR change it; BENCH_KEEP=1 keeps the lake. Prints; asserts nothing
about speed. `pip install duckdb` for the comparison (not a project dependency).
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

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ERASURE = [PY, "-c", "from erasure.cli import main; main()"]

SWEEP = r'''
import json, resource, sys, time
cfg = sys.argv[1]
t0 = time.perf_counter()
from pathlib import Path
import erasure.sweep as sweep
from erasure.engine import Engine
phase = {}
def timed(name, f):
    def run(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            phase[name] = time.perf_counter() - t
    return run
sweep.measure = timed("match", sweep.measure)
sweep.finished = timed("read", sweep.finished)
eng = Engine.from_path(Path(cfg))
t1 = time.perf_counter()
res = sweep.run_sweep(eng)
secs = time.perf_counter() - t1
print("RESULT " + json.dumps({"seconds": secs, "match_seconds": phase.get("match", 0.0),
      "read_seconds": phase.get("read", 0.0),
      "process_seconds": time.perf_counter() - t0, "status": res.status,
      "subjects": res.subjects, "findings": len(res.findings),
      "rows_found": sum(f.get("rows") or 0 for f in res.findings),
      "targets": len(res.targets_scanned),
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

DUCK = r'''
import json, resource, sys, time
import duckdb, pyarrow as pa
tables, ids_file = json.loads(sys.argv[1]), sys.argv[2]
ids = pa.table({"k": pa.array([int(x) for x in open(ids_file).read().split()], pa.int64())})
con = duckdb.connect()
con.register("ids", ids)
t0 = time.perf_counter()
found = 0
for files, col in tables:
    found += con.execute(f"SELECT count(*) FROM read_parquet({files!r}) t "
                         f"SEMI JOIN ids ON t.\"{col}\" = ids.k").fetchone()[0]
secs = time.perf_counter() - t0
print("RESULT " + json.dumps({"seconds": secs, "rows_found": found,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

BACKFILL = r'''
import sys
import pyarrow as pa, pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
path, ids = sys.argv[1], [int(x) for x in sys.argv[2:]]
import pyarrow.parquet as pq
dt = DeltaTable(path)
first = dt.file_uris()[0]
first = first[len("file://"):] if first.startswith("file://") else first
sample = pq.ParquetFile(first).read_row_group(0).slice(0, len(ids) * 3)   # 3 reviews each
sample = sample.cast(pa.schema(dt.schema().to_arrow()))
keys = pa.array([ids[i % len(ids)] for i in range(sample.num_rows)], pa.int64())
sample = sample.set_column(sample.schema.get_field_index("user_id"), "user_id", keys)
write_deltalake(path, sample, mode="append")
'''


def child(code: str, *args: str) -> dict:
    res = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if res.returncode != 0 or not line:
        sys.exit(f"benchmark step failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def erasure(base: Path, *args: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([*ERASURE, "--config", str(base / "erasure.toml"), *args],
                         capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"erasure {' '.join(args)} failed ({res.returncode}):\n"
                 f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def live_files(path: str) -> list[str]:
    if path.endswith(".parquet"):
        return [path]
    from deltalake import DeltaTable

    return [u[len("file://"):] if u.startswith("file://") else u
            for u in DeltaTable(path).file_uris()]


def main() -> None:
    rows = int(os.environ.get("BENCH_ROWS", "5000000"))
    n = int(os.environ.get("BENCH_SUBJECTS", "100000"))
    back = int(os.environ.get("BENCH_BACK", "50"))
    base = Path(os.environ.get("BENCH_DIR", ROOT / "bench_lake_sweep")).resolve()
    if base.exists():
        shutil.rmtree(base)
    gen = subprocess.run([PY, "-m", "sample_lake.generate", "--out", str(base), "--rows",
                          str(rows), "--seed", "7", "--json", "--no-feast", "--no-mlflow"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    info = json.loads(gen.stdout)
    ids = sorted(random.Random(5).sample(range(1, info["users"] + 1), min(n, info["users"])))
    ids_file = base / "subjects.txt"
    ids_file.write_text("\n".join(map(str, ids)) + "\n")
    submit_s = erasure(base, "request", "submit", "--subjects-file", str(ids_file),
                       "--reason", "bench")
    run_s = erasure(base, "run", "--pending", "--json")
    again = sorted(random.Random(9).sample(ids, min(back, len(ids))))
    raw_path = info["tables"]["raw/reviews"]
    subprocess.run([PY, "-c", BACKFILL, raw_path, *map(str, again)], cwd=ROOT, check=True)
    keyed = [(info["tables"]["raw/reviews"], "user_id"),
             (info["tables"]["clean/reviews"], "reviewer_id"),
             (info["tables"]["features/user_features"], "entity_id"),
             (info["tables"]["exports/user_activity"], "entity_id")]
    import pyarrow.parquet as pq
    files = [(live_files(p), c) for p, c in keyed]
    total = sum(pq.ParquetDataset(fs).read(columns=[c]).num_rows for fs, c in files)
    print(f"lake: {sum(info['rows'].values()):,} rows generated in 4 Delta tables + a Parquet "
          f"export; {len(ids):,} subjects submitted ({submit_s:.1f} s) and erased by "
          f"`run --pending` ({run_s:.1f} s); {len(again)} re-ingested; {total:,} rows in the "
          f"4 keyed datasets now")
    eng = child(SWEEP, str(base / "erasure.toml"))
    print(f"  erasure sweep (run_sweep, {eng['subjects']:,} subjects): {eng['seconds']:7.2f} s, "
          f"{total / eng['seconds']:,.0f} rows/s, peak RSS {eng['peak_rss_mb']:.0f} MB, "
          f"{eng['rows_found']:,} rows found back in {eng['findings']} findings "
          f"({eng['targets']} targets, status {eng['status']})")
    print(f"    of which matching (planning.measure):      {eng['match_seconds']:7.2f} s; "
          f"whole process with imports {eng['process_seconds']:.2f} s")
    print(f"    of which reading the finished requests:    {eng['read_seconds']:7.2f} s "
          "(requests.finished)")
    try:
        import duckdb  # noqa: F401
    except ImportError:
        print("  (pip install duckdb for the comparison)")
    else:
        duck = child(DUCK, json.dumps(files), str(ids_file))
        print(f"  DuckDB semi-join over the same files:       {duck['seconds']:7.2f} s, "
              f"{total / duck['seconds']:,.0f} rows/s, peak RSS {duck['peak_rss_mb']:.0f} MB, "
              f"{duck['rows_found']:,} rows found")
        print(f"  ratio sweep/DuckDB rows/s: {duck['seconds'] / eng['seconds']:.2f} "
              f"(goal >= 1.0); sweep peak RSS {eng['peak_rss_mb']:.0f} MB (goal < 1024 MB "
              "at 100,000 subjects over >= 10 M rows)")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

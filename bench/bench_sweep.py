"""Benchmark: sweep throughput for 100,000 erased subjects over a lake of >10 million rows,
next to a DuckDB semi-join over the same Parquet files.

The sweep's work after unsealing the subjects is one plan for all of them: per keyed table,
one pass over every file (key column only, row groups skipped by statistics, the log for
residue). This script times exactly that (`plan_erasures` with residue scanning) in a fresh
process, and DuckDB counting the same subjects' rows in the same files
(`read_parquet(...) SEMI JOIN ids`). BENCH_ROWS (default 5,000,000 reviews, 11 million rows),
BENCH_SUBJECTS (100,000) and BENCH_DIR change it. Prints; asserts nothing about speed.
`pip install duckdb` for the comparison (not a project dependency).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

ENGINE = r'''
import json, resource, sys, time
cfg, ids_file = sys.argv[1], sys.argv[2]
from pathlib import Path
from erasure.engine import Engine
from erasure.planning import plan_erasures
eng = Engine.from_path(Path(cfg))
ids = Path(ids_file).read_text().split()
subjects = [(f"h{i}", s) for i, s in enumerate(ids)]     # HMACs are not the point here
t0 = time.perf_counter()
graph = eng.graph()
plans = plan_erasures(eng.config, graph, eng.registry, subjects, with_residue=True)
secs = time.perf_counter() - t0
found = sum(t.rows for p in plans for t in p.targets)
print("RESULT " + json.dumps({"seconds": secs, "rows_found": found,
      "targets": len(plans[0].targets),
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
for path, col in tables:
    glob = path if path.endswith(".parquet") else path + "/**/*.parquet"
    found += con.execute(f"SELECT count(*) FROM read_parquet('{glob}') t "
                         f"SEMI JOIN ids ON t.\"{col}\" = ids.k").fetchone()[0]
secs = time.perf_counter() - t0
print("RESULT " + json.dumps({"seconds": secs, "rows_found": found,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def child(code: str, *args: str) -> dict:
    res = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if res.returncode != 0 or not line:
        sys.exit(f"benchmark step failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def main() -> None:
    rows = int(os.environ.get("BENCH_ROWS", "5000000"))
    n = int(os.environ.get("BENCH_SUBJECTS", "100000"))
    base = Path(os.environ.get("BENCH_DIR", ROOT / "bench_lake_sweep")).resolve()
    if base.exists():
        shutil.rmtree(base)
    gen = subprocess.run([PY, "-m", "sample_lake.generate", "--out", str(base), "--rows",
                          str(rows), "--seed", "7", "--json", "--no-feast", "--no-mlflow"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    info = json.loads(gen.stdout)
    keyed = [(info["tables"]["raw/reviews"], "user_id"),
             (info["tables"]["clean/reviews"], "reviewer_id"),
             (info["tables"]["features/user_features"], "entity_id"),
             (info["tables"]["exports/user_activity"], "entity_id")]
    import pyarrow.parquet as pq
    total = sum(pq.ParquetDataset(p if p.endswith(".parquet") else
                                  [str(f) for f in Path(p).glob("*.parquet")]).read(
                                      columns=[c]).num_rows for p, c in keyed)
    ids = sorted(random.Random(5).sample(range(1, info["users"] + 1), min(n, info["users"])))
    ids_file = base / "subjects.txt"
    ids_file.write_text("\n".join(map(str, ids)))
    print(f"lake: {sum(info['rows'].values()):,} rows in 4 Delta tables + a Parquet export; "
          f"{total:,} rows in the 4 keyed datasets; {len(ids):,} erased subjects")
    eng = child(ENGINE, str(base / "erasure.toml"), str(ids_file))
    print(f"  sweep scan (plan for all subjects, residue scan): {eng['seconds']:7.2f} s, "
          f"{total / eng['seconds']:,.0f} rows/s, peak RSS {eng['peak_rss_mb']:.0f} MB, "
          f"{eng['rows_found']:,} subject rows found in {eng['targets']} targets")
    try:
        import duckdb  # noqa: F401
        duck = child(DUCK, json.dumps(keyed), str(ids_file))
        print(f"  DuckDB semi-join over the same files:            {duck['seconds']:7.2f} s, "
              f"{total / duck['seconds']:,.0f} rows/s, peak RSS {duck['peak_rss_mb']:.0f} MB, "
              f"{duck['rows_found']:,} subject rows found")
    except ImportError:
        print("  (pip install duckdb for the comparison)")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

"""Benchmark: `erasure run --pending` over many requests, and the ledger's write rate in it.

Builds the sample lake (BENCH_ROWS reviews, default 500,000: 100,000 users in 4 Delta tables
and a Parquet export; BENCH_DIR for the folder), submits BENCH_REQUESTS requests (default
100,000; ids drawn from the lake's users, and beyond them when there are more requests than
users: those subjects are in no table and finish as not_found) with
`erasure request submit --subjects-file`, then runs `erasure run --pending` in a child process
(the CLI as installed, its output sent to /dev/null) and prints:

- the whole run's wall seconds (the child process, imports included) and its peak RSS;
- the ledger entries it wrote, and `ledger entries/s`: those entries divided by the time the
  child spent in the ledger's write path, measured inside the child by the ledger itself
  (`erasure.ledger.WRITE_STATS`: every `append` (canonical JSON, hash chain), every batched
  INSERT and every BEGIN/COMMIT with its head anchor write); not a separate micro-benchmark;
- `erasure ledger verify` over the whole ledger afterwards (the chain and anchor are exact);
- the raw comparison: on untouched copies of the 3 keyed Delta tables and the Parquet export
  taken before the run, one deltalake MERGE delete of the same ids per table + VACUUM 0,
  checkpoint and log cleanup, and the export rewritten without them (`bench/rawdelta.py`, as
  bench_delta_erasure.py does), in its own process; and the ratio engine / raw. The engine
  also plans (counts, residue scan), verifies and records every step.

BENCH_KEEP=1 keeps the lake. Prints; asserts nothing about speed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lakes import fresh_sample_lake

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

sys.path.insert(0, str(ROOT / "bench"))
from bench_delta_erasure import copy_export, copy_tables  # noqa: E402

RUN = r'''
import json, os, resource, sys, time
t0 = time.perf_counter()
from erasure.cli import run_cli
import erasure.ledger as ledger
out = sys.stdout
sys.stdout = open(os.devnull, "w")
try:
    code = run_cli(sys.argv[1:])
finally:
    sys.stdout.close()
    sys.stdout = out
s = ledger.WRITE_STATS
print("RESULT " + json.dumps({"exit": code, "seconds": time.perf_counter() - t0,
      "entries": s.entries, "ledger_seconds": s.seconds, "transactions": s.transactions,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

RAW = r'''
import json, resource, sys, time
t0 = time.perf_counter()
sys.path.insert(0, "bench")
from rawdelta import merge_delete, parquet_rewrite, purge
arg = json.loads(sys.argv[1])
ids = [int(x) for x in open(arg["ids"]).read().split()]
rows = 0
for path, col in arg["tables"]:
    rows += merge_delete(path, col, ids)
    purge(path)
for path, col in arg["parquet"]:
    rows += parquet_rewrite(path, col, ids)
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "rows_deleted": rows,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def child(code: str, *args: str, ok: tuple[int, ...] = (0,)) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([PY, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if res.returncode != 0 or not line:
        sys.exit(f"benchmark step failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    out = json.loads(line[-1][7:])
    if out.get("exit", 0) not in ok:
        sys.exit(f"erasure {' '.join(args)} exited {out['exit']}:\n{res.stderr[-3000:]}")
    out["wall"] = wall
    return out


def erasure(cfg: str, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run([PY, "-m", "erasure.cli", "--config", cfg, *args],
                         capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"erasure {' '.join(args)} failed ({res.returncode}):\n"
                 f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0, res.stdout


def entries(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM entries").fetchone()[0]
    finally:
        con.close()


def main() -> None:
    n = int(os.environ.get("BENCH_REQUESTS", "100000"))
    base, rows, info, gen_s = fresh_sample_lake("bench_lake_pending", 500_000)
    lake = Path(info["out_dir"])
    cfg = str(lake / "erasure.toml")
    # untouched copies for the raw side, taken before the engine changes anything
    raw = {"tables": copy_tables(lake, base / "raw"),
           "parquet": copy_export(lake, base / "raw" / "exports")}
    users = info["users"]
    ids = sorted(random.Random(3).sample(range(1, max(users, n) + 1), n))
    ids_file = base / "ids.txt"
    ids_file.write_text("\n".join(map(str, ids)) + "\n")
    in_lake = sum(1 for i in ids if i <= users)
    print(f"lake: {rows:,} reviews, {users:,} users, {sum(info['rows'].values()):,} rows in "
          f"4 Delta tables + a Parquet export, built in {gen_s:.1f} s at {lake}")
    submit_s, _ = erasure(cfg, "request", "submit", "--subjects-file", str(ids_file))
    db = lake / ".erasure" / "ledger.db"
    before = entries(db)
    print(f"{n:,} requests submitted in {submit_s:.1f} s ({in_lake:,} of the subjects are in "
          "the lake, the others in no table: not_found)")

    run = child(RUN, "--config", cfg, "run", "--pending")
    written = entries(db) - before
    verify_s, verified = erasure(cfg, "ledger", "verify")
    raw = child(RAW, json.dumps({**raw, "ids": str(ids_file)}))

    rate = run["entries"] / run["ledger_seconds"] if run["ledger_seconds"] else 0.0
    print(f"erasure run --pending, {n:,} requests: {run['wall']:.2f} s whole run "
          f"(child process wall, imports included), peak RSS {run['peak_rss_mb']:.0f} MB")
    print(f"  ledger entries written: {written:,} in {run['transactions']:,} transactions "
          f"({run['entries']:,} counted by the write path)")
    print(f"  ledger write path (append + batched INSERT + COMMIT + anchor), timed inside the "
          f"run: {run['ledger_seconds']:.2f} s of {run['seconds']:.2f} s")
    print(f"  ledger entries/s: {rate:,.0f} (goal >= 50,000)")
    print(f"  erasure ledger verify afterwards: {verified.strip()} ({verify_s:.1f} s)")
    print(f"raw deltalake MERGE delete of the same {n:,} ids + VACUUM 0 + checkpoint + cleanup "
          f"on the 3 Delta tables, the Parquet export rewritten: {raw['wall']:.2f} s, peak RSS "
          f"{raw['peak_rss_mb']:.0f} MB, {raw['rows_deleted']:,} rows deleted")
    print(f"ratio engine/raw (whole processes): {run['wall'] / raw['wall']:.1f}x (goal <= 1.5x "
          "at 1,000 requests)")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

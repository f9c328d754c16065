"""Benchmark: `erasure run` against the raw deltalake operations doing the same delete.

The sample lake (default 5,000,000 reviews, 11 M rows in 4 tables; BENCH_ROWS to change,
BENCH_DIR for the folder), each measurement in a fresh process (time and peak RSS of that
process, measured inside it, so the interpreter's own start is in neither side):
  one subject:    erasure request submit + run     vs  raw delete (+ purge)
  1,000 subjects: erasure submit --subjects-file + run --pending
                                                   vs  raw merge (+ purge)
"Raw" runs on a copy of the same tables: per Delta table, DELETE (or MERGE against an Arrow
table of the keys), then for "+purge" VACUUM retention 0, checkpoint and metadata cleanup,
and the rewrite of the Parquet export without the rows: the physical work the engine does
too. The engine additionally plans (counts rows and scans every file for residue), records
the ledger, and verifies (a second scan of what changed). The goal for 1,000 pending
requests on one 3 M-row table is measured by bench_cost_curve.py.
Prints the figures and each ratio next to its goal (issue 12); asserts nothing about speed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from lakes import fresh_sample_lake

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

KEYS = {"raw/reviews": "user_id", "clean/reviews": "reviewer_id",
        "features/user_features": "entity_id"}
EXPORT = "exports/user_activity.parquet"

CHILD = r'''
import json, resource, sys, time
t0 = time.perf_counter()
kind, arg = sys.argv[1], json.loads(sys.argv[2])
result = None
if kind == "cli":
    from erasure.cli import run_cli
    import contextlib, io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = run_cli(arg)
    result = {"exit": code}
else:
    from deltalake import DeltaTable
    sys.path.insert(0, "bench")
    from rawdelta import merge_delete, parquet_rewrite, purge
    rows = 0
    for path, col in arg["tables"]:
        ids = arg["ids"]
        if kind == "raw-delete":
            m = DeltaTable(path).delete(f'"{col}" = {int(ids[0])}')
            rows += m.get("num_deleted_rows", 0)
        else:
            rows += merge_delete(path, col, ids)
        if arg["purge"]:
            purge(path)
    for path, col in arg.get("parquet", []):
        rows += parquet_rewrite(path, col, arg["ids"])
    result = {"rows_deleted": rows}
result["seconds"] = time.perf_counter() - t0
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(result))
'''


def child(kind: str, arg) -> dict:
    res = subprocess.run([PY, "-c", CHILD, kind, json.dumps(arg)], capture_output=True,
                         text=True, cwd=ROOT)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if res.returncode != 0 or not line:
        sys.exit(f"benchmark step {kind} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    out = json.loads(line[-1][7:])
    if out.get("exit", 0) not in (0,):
        sys.exit(f"erasure exited {out['exit']} in {kind} {arg}:\n{res.stderr[-3000:]}")
    return out


def copy_tables(lake: Path, dest: Path) -> list[tuple[str, str]]:
    out = []
    for name, col in KEYS.items():
        shutil.copytree(lake / "tables" / name, dest / name)
        out.append((str(dest / name), col))
    return out


def copy_export(lake: Path, dest: Path) -> list[tuple[str, str]]:
    """The sample lake's Parquet export, which the engine erases from too."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(lake / "tables" / EXPORT, dest / "export.parquet")
    return [(str(dest / "export.parquet"), "entity_id")]


def ratio_line(label: str, engine: float, raw: float, goal: str) -> str:
    return f"  ratio {label}: {engine / raw:.2f}x ({goal})"


def row(label: str, r: dict) -> str:
    return f"  {label:62} {r['seconds']:8.2f} s   peak RSS {r['peak_rss_mb']:7.0f} MB"


def main() -> None:
    n_many = int(os.environ.get("BENCH_SUBJECTS", "1000"))
    base, rows, info, gen_s = fresh_sample_lake("bench_lake", 5_000_000)
    lake = Path(info["out_dir"])
    cfg = str(lake / "erasure.toml")
    # untouched copies for the raw baselines, taken before the engine changes anything
    copies = {k: copy_tables(lake, base / k) for k in
              ("one_delete", "one_purge", "many_merge", "many_purge")}
    exports = {k: copy_export(lake, base / k / "exports") for k in ("one_purge", "many_purge")}
    subject = 42
    rng = random.Random(1)
    many = sorted(rng.sample([u for u in range(1, info["users"] + 1) if u != subject], n_many))
    ids_file = base / "ids.txt"
    ids_file.write_text("\n".join(map(str, many)) + "\n")
    print(f"lake: {rows:,} reviews, {info['users']:,} users, {sum(info['rows'].values()):,} rows "
          f"in 4 tables ({sum(info['files'].values())} files), built in {gen_s:.1f}s at {lake}")

    plan1 = child("cli", ["--config", cfg, "plan", "--subject-id", str(subject)])
    sub = subprocess.run([PY, "-m", "erasure.cli", "--config", cfg, "request", "submit",
                          "--subject-id", str(subject), "--json"], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    rid = json.loads(sub.stdout)["request_id"]
    run1 = child("cli", ["--config", cfg, "run", rid])
    raw1 = child("raw-delete", {"tables": copies["one_delete"], "ids": [subject], "purge": False})
    raw1p = child("raw-delete", {"tables": copies["one_purge"], "ids": [subject], "purge": True,
                                 "parquet": exports["one_purge"]})

    sub_many = child("cli", ["--config", cfg, "request", "submit", "--subjects-file", str(ids_file)])
    run_many = child("cli", ["--config", cfg, "run", "--pending"])
    rawm = child("raw-merge", {"tables": copies["many_merge"], "ids": many, "purge": False})
    rawmp = child("raw-merge", {"tables": copies["many_purge"], "ids": many, "purge": True,
                                "parquet": exports["many_purge"]})

    print("\none subject (id 42): raw = the 3 keyed Delta tables, and with the purge also "
          "the Parquet export the engine rewrites")
    print(row("erasure plan (dry run: count + residue scan)", plan1))
    print(row("erasure run (plan, erase, purge, verify, ledger)", run1))
    print(row("raw deltalake DELETE", raw1))
    print(row("raw DELETE + VACUUM 0 + checkpoint + cleanup + Parquet rewrite", raw1p))
    print(f"\n{n_many:,} subjects")
    print(row("erasure request submit --subjects-file", sub_many))
    print(row("erasure run --pending (one pass per table)", run_many))
    print(row("raw deltalake MERGE delete", rawm))
    print(row("raw MERGE + VACUUM 0 + checkpoint + cleanup + Parquet rewrite", rawmp))
    print(f"\nrows deleted by raw: one subject {raw1['rows_deleted']}, "
          f"{n_many:,} subjects {rawm['rows_deleted']:,} (Delta only)")
    print("\nratios (engine / raw doing the same physical work, same run):")
    print(ratio_line(f"1 subject on {sum(info['rows'].values()):,} rows", run1["seconds"],
                     raw1p["seconds"], "goal <= 1.5x"))
    print(ratio_line(f"{n_many:,} subjects on the sample lake", run_many["seconds"],
                     rawmp["seconds"], "reported; the goal for 1,000 pending requests is "
                     "on one 3 M-row table: bench_cost_curve.py"))
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

"""Benchmark: the cost curve. The same 1,000-subject batch on lakes of growing size, engine
against the raw deltalake operations doing the same delete, in one run.

For each size in BENCH_SIZES (rows of the keyed table; default 1,000,000, 3,000,000,
10,000,000 and 30,000,000; e.g. BENCH_SIZES=100000,300000 for a quick run; without it,
BENCH_ROWS=N scales the default curve so that its largest lake has N rows) it builds a lake
of its own (not the sample lake: that one takes minutes at 30 M rows):

  tables/events     one Delta table, int64 key `user_id`, about 10 rows per user, written in
                    BENCH_COMMITS (20) commits of one contiguous key range each, sorted by key
                    ("clustered by key": each file's min/max of `user_id` covers 1/20 of the ids)
  tables/events_by_reviewer
                    with BENCH_COPY=1 only: the same rows with the key renamed `reviewer_id`
                    (a second root), so each subject is erased from two tables; the rows,
                    files and rows deleted reported then count both tables

BENCH_SUBJECTS (1,000) user ids, drawn at random over the whole key range (so every file
holds some of them and is rewritten), are submitted with `erasure request submit
--subjects-file`, then measured, each in a fresh process:

  engine  `erasure --config ... run --pending`: plan (count + residue scan), MERGE, purge,
          verify, ledger. "whole" is the wall time of the process from the parent (spawn to
          exit); "net" subtracts the wall time of `erasure --help` measured in the same run (the
          interpreter and CLI start-up every command pays), as issue 12 states its goal.
  raw     on an untouched copy of the same table(s): deltalake MERGE (`when_matched_delete`,
          `streamed_exec=False`) of an Arrow table of the same ids, VACUUM retention 0
          (`enforce_retention_duration=False`), the two retention properties set to 0,
          checkpoint and `cleanup_metadata`, i.e. the physical work the engine also does.
          "whole" is the process wall time; "net" subtracts `python -c pass` (interpreter only;
          importing deltalake and pyarrow stays in the raw cost, as in the engine's).
  peak RSS of each process from wait4 (the parent imports nothing heavy and builds no data,
          so a child's ru_maxrss is its own).

BENCH_REPEAT (1) runs both sides that many times on fresh copies of the same generated table
(alternating which side goes first) and keeps each side's fastest run (the machine may be shared; peak RSS is the largest of the
repeats). The ratio is engine net / raw net. Rows and files are counted from the Delta log (add actions)
before anything runs; rows deleted come from the raw MERGE's metrics and are checked against
the table after the engine ran. Prints a markdown table, writes it to
bench/results/cost_curve.md (BENCH_OUT to change) with the raw figures as JSON next to it,
and plots seconds and peak RSS against rows to docs/cost-curve.png (BENCH_PLOT; needs
matplotlib, the `bench` extra). BENCH_DIR is the scratch folder (default ./bench_curve,
removed unless BENCH_KEEP=1, which keeps the generated tables). Asserts nothing about speed.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# Builds one lake: BENCH rows in `commits` appends of one sorted key range each.
GEN = r'''
import json, sys
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake
out, rows, commits, copy, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
users = max(rows // 10, 1)
rng = np.random.default_rng(seed)
base_ts = np.datetime64("2026-01-01T00:00:00", "us")
for i in range(commits):
    lo, hi = 1 + users * i // commits, 1 + users * (i + 1) // commits      # ids [lo, hi)
    n = rows * (i + 1) // commits - rows * i // commits
    uid = np.sort(rng.integers(lo, hi, size=n, dtype=np.int64))
    t = pa.table({
        "user_id": uid,
        "created_at": pa.array(base_ts + rng.integers(0, 300 * 86400 * 10**6, size=n).astype("timedelta64[us]")),
        "rating": pa.array(rng.integers(1, 6, size=n, dtype=np.int8)),
        "amount": pa.array(np.round(rng.random(n) * 100, 2)),
        "note": pc.binary_join_element_wise("review #", pc.cast(pa.array(rng.integers(0, 10**9, size=n)), pa.string()), ""),
    })
    write_deltalake(out + "/tables/events", t, mode="append")
    if copy:
        write_deltalake(out + "/tables/events_by_reviewer", t.rename_columns(["reviewer_id"] + t.column_names[1:]), mode="append")
print("RESULT " + json.dumps({"users": users}))
'''

# Rows and files of a Delta table from its log, and (with ids) how many rows hold them.
COUNT = r'''
import json, sys
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
out = []
for path, col in json.loads(sys.argv[1]):
    dt = DeltaTable(path)
    adds = pa.table(dt.get_add_actions(flatten=True))
    rec = {"files": adds.num_rows, "rows": int(pc.sum(adds["num_records"]).as_py() or 0),
           "version": dt.version()}
    if len(sys.argv) > 2:
        ids = pa.array(json.loads(sys.argv[2]), type=pa.int64())
        files = dt.file_uris()
        rec["rows_with_ids"] = (ds.dataset(files, format="parquet").count_rows(filter=pc.field(col).isin(ids))
                                if files else 0)
    out.append(rec)
print("RESULT " + json.dumps(out))
'''

RAW = r'''
import json, sys, time
t0 = time.perf_counter()
import pyarrow as pa
sys.path.insert(0, "bench")
from rawdelta import merge_delete, purge
arg = json.loads(sys.argv[1])
rows = 0
for path, col in arg["tables"]:
    rows += merge_delete(path, col, arg["ids"], pa.int64())
    purge(path)
print("RESULT " + json.dumps({"rows_deleted": rows, "inner_seconds": time.perf_counter() - t0}))
'''


def spawn(args: list[str], what: str, env: dict | None = None) -> dict:
    """Run one process; its wall time from here and its own peak RSS (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=out, stderr=err, cwd=ROOT, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if p.returncode != 0:
        sys.exit(f"{what} exited {p.returncode}:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    res = {"seconds": wall, "peak_rss_mb": ru.ru_maxrss / 1024, "stdout": stdout}
    line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if line:
        res["result"] = json.loads(line[-1][7:])
        if isinstance(res["result"], dict):
            res.update(res["result"])
    return res


def erasure(cfg: Path, *args: str) -> list[str]:
    return [PY, "-m", "erasure.cli", "--config", str(cfg), *args]


def write_config(lake: Path, tables: list[tuple[str, str]]) -> Path:
    cfg = lake / "erasure.toml"
    roots = "".join(f'\n[[roots]]\nnamespace = "file"\nname = "{name}"\ncolumn = "{col}"\n'
                    for name, col in tables)
    cfg.write_text('[ledger]\npath = ".erasure/ledger.db"\n\n[keys]\npath = ".erasure/keys/subject.key"\n\n'
                   '[lineage]\nevents = []\nstore = ".erasure/lineage.db"\n' + roots)
    return cfg


def measure(rows: int, base: Path, n_subjects: int, commits: int, copy: bool, startup: dict,
            repeat: int) -> dict:
    pristine = base / f"pristine_{rows}"
    lake, rawdir = base / "engine", base / "raw"
    pristine.mkdir(parents=True)
    t0 = time.perf_counter()
    gen = spawn([PY, "-c", GEN, str(pristine), str(rows), str(commits), "1" if copy else "0", "7"],
                "generate")
    gen_s = time.perf_counter() - t0
    users = gen["result"]["users"]
    names = [("tables/events", "user_id")] + ([("tables/events_by_reviewer", "reviewer_id")] if copy else [])
    eng_tables = [(str(lake / name), col) for name, col in names]
    raw_tables = [(str(rawdir / name), col) for name, col in names]
    rng = random.Random(1)
    ids = sorted(rng.sample(range(1, users + 1), min(n_subjects, users)))
    ids_file = base / f"ids_{rows}.txt"
    ids_file.write_text("\n".join(map(str, ids)) + "\n")
    counts = spawn([PY, "-c", COUNT, json.dumps([(str(pristine / n), c) for n, c in names]),
                    json.dumps(ids)], "count")["result"]
    expect = sum(c["rows_with_ids"] for c in counts)
    print(f"  {rows:,} rows: {users:,} users, {sum(c['files'] for c in counts)} files, "
          f"{expect:,} rows hold the {len(ids):,} ids; built in {gen_s:.1f} s", flush=True)

    runs = []
    for i in range(repeat):
        # fresh, identical copies for both sides: the engine's lake (with its own ledger) and raw
        for d in (lake, rawdir):
            if d.exists():
                shutil.rmtree(d)
        for name, _ in names:
            shutil.copytree(pristine / name, lake / name)
            shutil.copytree(pristine / name, rawdir / name)
        cfg = write_config(lake, names)
        submit = spawn(erasure(cfg, "request", "submit", "--subjects-file", str(ids_file)), "submit")
        # alternate which side goes first, so a neighbour's load falls on both sides alike
        eng_args = erasure(cfg, "run", "--pending", "--json")
        raw_args = [PY, "-c", RAW, json.dumps({"tables": raw_tables, "ids": ids})]
        if i % 2:
            raw = spawn(raw_args, "raw merge + purge")
            eng = spawn(eng_args, "erasure run --pending")
        else:
            eng = spawn(eng_args, "erasure run --pending")
            raw = spawn(raw_args, "raw merge + purge")
        after = spawn([PY, "-c", COUNT, json.dumps(eng_tables), json.dumps(ids)], "count")["result"]
        raw_after = spawn([PY, "-c", COUNT, json.dumps(raw_tables)], "count")["result"]
        left = sum(c["rows_with_ids"] for c in after)
        report = json.loads(eng["stdout"])
        eng_deleted = sum(t["rows_deleted"] for r in report["requests"] for t in r["targets"])
        if left or raw["rows_deleted"] != expect or eng_deleted != expect or report["status"] != "completed":
            sys.exit(f"at {rows:,} rows: {left} rows still hold the ids after the engine ran "
                     f"({report['status']}); engine deleted {eng_deleted}, raw {raw['rows_deleted']}, "
                     f"expected {expect}")
        if sum(c["rows"] for c in after) != sum(c["rows"] for c in raw_after):
            sys.exit(f"at {rows:,} rows: engine and raw leave different row counts")
        runs.append({
            "submit_seconds": submit["seconds"],
            "engine_seconds": eng["seconds"], "engine_peak_rss_mb": eng["peak_rss_mb"],
            "raw_seconds": raw["seconds"], "raw_inner_seconds": raw["inner_seconds"],
            "raw_peak_rss_mb": raw["peak_rss_mb"],
            "files_after_engine": sum(c["files"] for c in after),
            "files_after_raw": sum(c["files"] for c in raw_after),
        })
        print(f"    engine {eng['seconds']:.2f} s, {eng['peak_rss_mb']:.0f} MB; "
              f"raw {raw['seconds']:.2f} s, {raw['peak_rss_mb']:.0f} MB", flush=True)
    # the best of the repeats on each side (the machine is shared: the least disturbed run)
    be = min(runs, key=lambda r: r["engine_seconds"])
    br = min(runs, key=lambda r: r["raw_seconds"])
    eng_net = be["engine_seconds"] - startup["engine"]["seconds"]
    raw_net = br["raw_seconds"] - startup["python"]["seconds"]
    res = {
        "rows": sum(c["rows"] for c in counts), "files": sum(c["files"] for c in counts),
        "tables": len(names), "commits": commits, "subjects": len(ids), "rows_deleted": expect,
        "generate_seconds": gen_s, "repeats": runs,
        "engine_seconds": be["engine_seconds"], "engine_net_seconds": eng_net,
        "engine_peak_rss_mb": max(r["engine_peak_rss_mb"] for r in runs),
        "raw_seconds": br["raw_seconds"], "raw_net_seconds": raw_net,
        "raw_peak_rss_mb": max(r["raw_peak_rss_mb"] for r in runs),
        "ratio": eng_net / raw_net if raw_net > 0 else float("nan"),
    }
    print(f"    best: engine {be['engine_seconds']:.2f} s whole / {eng_net:.2f} s net; "
          f"raw {raw_net:.2f} s net; ratio {res['ratio']:.2f}x", flush=True)
    if os.environ.get("BENCH_KEEP") != "1":
        for d in (pristine, lake, rawdir):
            shutil.rmtree(d)
    return res


def table_md(results: list[dict], startup: dict) -> str:
    lines = [
        ("| rows | files | rows deleted | engine whole | engine net | engine peak RSS "
         "| raw | raw peak RSS | engine net / raw |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['files']} | {r['rows_deleted']:,} | {r['engine_seconds']:.2f} s "
            f"| {r['engine_net_seconds']:.2f} s | {r['engine_peak_rss_mb']:.0f} MB "
            f"| {r['raw_net_seconds']:.2f} s | {r['raw_peak_rss_mb']:.0f} MB | {r['ratio']:.1f}x |")
    lines.append("")
    lines.append("Every file holds some of the ids, so both sides read and rewrite every file. "
                 "Engine: `erasure run --pending` (plan, MERGE, purge, verify, ledger); raw: deltalake "
                 "MERGE delete + VACUUM 0 + checkpoint + log cleanup, net of interpreter start.")
    lines.append(f"Start-up subtracted: `erasure --help` {startup['engine']['seconds']:.2f} s "
                 f"({startup['engine']['peak_rss_mb']:.0f} MB) from the engine, "
                 f"`python -c pass` {startup['python']['seconds']:.2f} s from raw.")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    x = [r["rows"] / 1e6 for r in results]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    a1.plot(x, [r["engine_seconds"] for r in results], "o-", color="C0", label="engine, whole process")
    a1.plot(x, [r["engine_net_seconds"] for r in results], "o--", color="C0", alpha=0.6,
            label="engine, net of start-up")
    a1.plot(x, [r["raw_net_seconds"] for r in results], "s-", color="C1",
            label="raw deltalake MERGE + purge")
    a2.plot(x, [r["engine_peak_rss_mb"] for r in results], "o-", color="C0", label="engine")
    a2.plot(x, [r["raw_peak_rss_mb"] for r in results], "s-", color="C1", label="raw deltalake")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    a1.set_yscale("log")
    a1.yaxis.set_major_formatter(plain)
    a1.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "235" else ""))
    a2.set_ylim(0, max(r["engine_peak_rss_mb"] for r in results) * 1.15)
    for ax, yl in ((a1, "seconds"), (a2, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("rows in the keyed table (millions)")
        ax.set_ylabel(yl)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{v:g}" for v in x])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for r, xv in zip(results, x):
        a1.annotate(f"{r['ratio']:.1f}x", (xv, r["engine_net_seconds"]), textcoords="offset points",
                    xytext=(-8, 10), fontsize=8, color="C0")
    a1.margins(y=0.12)          # room for the ratio labels
    a1.set_title(f"time: {results[0]['subjects']:,} subjects erased (labels: engine net / raw)")
    a2.set_title("peak RSS of the process")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    default = [1_000_000, 3_000_000, 10_000_000, 30_000_000]
    if os.environ.get("BENCH_SIZES"):
        sizes = [int(s.replace("_", "")) for s in os.environ["BENCH_SIZES"].split(",") if s.strip()]
    elif os.environ.get("BENCH_ROWS"):
        # the same curve scaled down (or up) so that its largest lake has BENCH_ROWS rows
        top = int(os.environ["BENCH_ROWS"])
        sizes = [max(1_000, top * s // default[-1]) for s in default]
    else:
        sizes = default
    n_subjects = int(os.environ.get("BENCH_SUBJECTS", "1000"))
    commits = int(os.environ.get("BENCH_COMMITS", "20"))
    copy = os.environ.get("BENCH_COPY") == "1"
    repeat = max(1, int(os.environ.get("BENCH_REPEAT", "1")))
    base = Path(os.environ.get("BENCH_DIR", ROOT / "bench_curve")).resolve()
    out_md = Path(os.environ.get("BENCH_OUT", ROOT / "bench" / "results" / "cost_curve.md"))
    out_png = Path(os.environ.get("BENCH_PLOT", ROOT / "docs" / "cost-curve.png"))
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    # fixed start-up costs, taken once per run and subtracted at every size (min of 3)
    startup = {
        "engine": min((spawn([PY, "-m", "erasure.cli", "--help"], "erasure --help") for _ in range(3)),
                      key=lambda r: r["seconds"]),
        "python": min((spawn([PY, "-c", "pass"], "python") for _ in range(3)), key=lambda r: r["seconds"]),
    }
    for v in startup.values():
        v.pop("stdout", None)
    print(f"cost curve: {n_subjects:,} subjects, {commits} commits per table, best of {repeat}"
          f"{', with a renamed copy' if copy else ''}; start-up `erasure --help` "
          f"{startup['engine']['seconds']:.2f} s", flush=True)
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False,
                         cwd=ROOT).stdout.strip() or "unknown"
    # the engine code measured: uncommitted changes to it, if any, are named with the results
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "erasure", "connectors"],
                           capture_output=True, text=True, check=False, cwd=ROOT).stdout.split("\n")
    dirty = sorted(line[3:] for line in dirty if line.strip())
    results = [measure(rows, base, n_subjects, commits, copy, startup, repeat) for rows in sizes]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    heading = (f"Cost curve, {date.today().isoformat()}, {machine}: {n_subjects:,} subjects, "
               f"{'2 Delta tables (the key renamed in the copy)' if copy else 'one Delta table'} "
               f"of {commits} commits clustered by key, best of {repeat} per side")
    md = table_md(results, startup)
    print()
    print(md)
    for r in results:
        if r["rows"] == 3_000_000 and not copy:
            print(f"\n  ratio {n_subjects:,} pending on one table of 3,000,000 rows, net of "
                  f"start-up: {r['ratio']:.2f}x (goal <= 1.5x)")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    note = f"; uncommitted changes in {', '.join(dirty)}" if dirty else ""
    out_md.write_text(f"{heading} (commit {git}{note})\n\n{md}\n")
    out_md.with_suffix(".json").write_text(json.dumps(
        {"date": date.today().isoformat(), "machine": machine, "commit": git,
         "uncommitted_engine_files": dirty, "startup": startup,
         "results": results}, indent=1) + "\n")
    try:
        plot(results, out_png, heading)
        print(f"\nwrote {out_md} and {out_png}")
    except ImportError:
        print(f"\nwrote {out_md}; no plot: pip install matplotlib (the `bench` extra)")
    if os.environ.get("BENCH_KEEP") != "1":
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

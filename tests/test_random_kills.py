"""Kills at random moments of a real `erasure run --pending` (SIGKILL, the process gets no
chance to clean up), then a run to completion: every request completes, no other subject's
row is lost, no table setting changed, the ledger verifies, nothing of the subjects remains.

The moments are random on purpose (the seed is printed on failure): the properties must hold
wherever the process dies: during the plan, a MERGE, the vacuum, the checkpoint, the log
cleanup, a Parquet rewrite or a ledger transaction.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from deltalake import DeltaTable

from conftest import files_holding, read_table

ERASURE = str(Path(sys.executable).with_name("erasure"))
KEYS = {"raw/reviews": "user_id", "clean/reviews": "reviewer_id",
        "features/user_features": "entity_id", "exports/user_activity": "entity_id"}


def _cli(cfg: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([ERASURE, "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=300, **kw)


def _rows_of_others(lake, subjects: set[int]) -> dict[str, list[tuple]]:
    out = {}
    for name, col in KEYS.items():
        t = read_table(lake.tables[name])
        names = sorted(t.column_names)
        out[name] = sorted(tuple(str(r[n]) for n in names) for r in t.to_pylist()
                           if r[col] not in subjects)
    return out


def _configurations(lake) -> dict[str, dict]:
    return {n: dict(DeltaTable(p).metadata().configuration) for n, p in lake.delta_tables.items()}


def _split(items: list, n: int) -> list[list]:
    return [items[i::n] for i in range(n)]


def test_random_kills_during_a_batch_run_resume_to_completion(lake):
    seed = int(os.environ.get("ERASURE_KILL_SEED", time.time_ns() % 1_000_000))
    # A MERGE killed after writing its new files but before committing them leaves orphans
    # holding later batches' subjects. No other writer touches these tables, so the purge may
    # delete orphans at once instead of after the default hour (which protects another
    # writer's in-flight files; test_delta_purge_safety covers that default).
    text = lake.config.read_text()
    assert '[delta]\nresidue = "purge"\n' in text
    lake.config.write_text(text.replace('[delta]\nresidue = "purge"\n',
                                        '[delta]\nresidue = "purge"\norphan_grace = "0s"\n'))
    rnd = random.Random(seed)
    ids = sorted({int(x) for x in read_table(lake.tables["raw/reviews"]).column("user_id")
                  .to_pylist()})
    batches = [sorted(b) for b in _split(rnd.sample(ids, 24), 6)]
    subjects = {s for b in batches for s in b}
    others_before = _rows_of_others(lake, subjects)
    config_before = _configurations(lake)

    rids, kills = [], 0
    for i, batch in enumerate(batches):      # new requests each round, so each run has work
        subjects_file = lake.root / f"subjects-{i}.txt"
        subjects_file.write_text("".join(f"{s}\n" for s in batch))
        sub = _cli(lake.config, "request", "submit", "--subjects-file", str(subjects_file),
                   "--json")
        assert sub.returncode == 0, sub.stderr
        rids += [r["request_id"] for r in json.loads(sub.stdout)["requests"]]
        proc = subprocess.Popen([ERASURE, "--config", str(lake.config), "run", "--pending"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.1, 1.6))      # a whole run takes about 1.5 s here
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
    assert len(rids) == 24
    # the test is about dying mid-run: most rounds must have been killed before finishing
    assert kills >= 2, (seed, kills)
    final = None
    for _ in range(3):                        # then run until nothing is pending
        final = _cli(lake.config, "run", "--pending", "--json")
        if final.returncode == 0 and json.loads(final.stdout)["status"] in (
                "completed", "nothing-to-do"):
            break
    assert final is not None and final.returncode == 0, (seed, kills, final.stdout[-2000:],
                                                          final.stderr[-2000:])

    status = json.loads(_cli(lake.config, "status", "--json").stdout)
    assert {r["request_id"]: r["status"] for r in status["requests"]} == \
        {rid: "completed" for rid in rids}, (seed, kills)
    assert _cli(lake.config, "ledger", "verify").returncode == 0, seed
    assert _rows_of_others(lake, subjects) == others_before, (seed, kills)
    assert _configurations(lake) == config_before, (seed, kills)
    for name, col in KEYS.items():
        left = set(read_table(lake.tables[name]).column(col).to_pylist())
        assert not (left & subjects), (seed, name)
    # nothing of any subject in any file under the tables (an e-mail is a plain-text trace)
    emails = [f"user{s}@example.com".encode() for s in sorted(subjects)]
    assert files_holding(lake.root / "tables", emails, {}) == [], seed
    assert not list((lake.root / "tables").rglob("*.erasure-*.tmp")), seed

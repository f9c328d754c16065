"""`make demo`: build the sample lake and erase one subject end to end with the real CLI.

Environment: DEMO_DIR (default demo_lake), DEMO_ROWS (default 20000), DEMO_SUBJECT (42).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sample_lake.generate import generate


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def erasure(cfg: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "erasure"), "--config", str(cfg), *args]
    print("$ erasure " + " ".join(args), flush=True)
    res = subprocess.run(cmd, text=True, capture_output=True)
    if res.stdout:
        print(res.stdout.rstrip())
    if res.stderr:
        print(res.stderr.rstrip(), file=sys.stderr)
    if check and res.returncode != 0:
        sys.exit(f"demo: `erasure {' '.join(args)}` exited {res.returncode}")
    return res


def count_subject(tables: dict[str, str], subject: int) -> dict[str, tuple[int, int]]:
    """(subject rows, other rows) per table, read with deltalake directly."""
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    key = {"raw/reviews": "user_id", "clean/reviews": "reviewer_id",
           "features/user_features": "entity_id"}
    out = {}
    for name, col in key.items():
        t = pa.table(QueryBuilder().register("t", DeltaTable(tables[name]))
                     .execute(f'SELECT "{col}" AS k FROM t').read_all())
        ks = t.column("k").to_pylist()
        mine = sum(1 for k in ks if k == subject)
        out[name] = (mine, len(ks) - mine)
    return out


def online_features(repo: str, ids: list[int]) -> dict[int, dict]:
    """What Feast serves for these authors (the model's view of them)."""
    from feast import FeatureStore

    refs = ["author_stats:n_reviews", "author_stats:avg_rating",
            "author_activity:n_positive", "author_activity:n_negative"]
    res = FeatureStore(repo_path=repo).get_online_features(
        features=refs, entity_rows=[{"entity_id": i} for i in ids]).to_dict()
    return {i: {r.split(":")[1]: res[r.split(":")[1]][k] for r in refs} for k, i in enumerate(ids)}


def main() -> None:
    out = Path(os.environ.get("DEMO_DIR", "demo_lake")).resolve()
    rows = int(os.environ.get("DEMO_ROWS", "20000"))
    subject = int(os.environ.get("DEMO_SUBJECT", "42"))
    banner(f"1. Generating the sample lake in {out} ({rows} reviews)")
    info = generate(out, rows=rows, seed=7, force=True)
    cfg = Path(info["config"])
    print(f"tables: {', '.join(sorted(info['tables']))}\nconfig: {cfg}")
    before = count_subject(info["tables"], subject)
    neighbour = subject + 1
    if info.get("feast_repo"):
        print("\nFeast online features before (what a model is served):")
        for i, feats in online_features(info["feast_repo"], [subject, neighbour]).items():
            print(f"  author {i}: {feats}")

    banner("2. Lineage: where does a user's data flow?")
    erasure(cfg, "lineage", "show")

    banner(f"3. Dry run for subject {subject} (changes nothing)")
    erasure(cfg, "plan", "--subject-id", str(subject))

    banner("4. The Article 17 request")
    rid = json.loads(erasure(cfg, "request", "submit", "--subject-id", str(subject),
                             "--requested-by", "privacy@example.com",
                             "--reason", "Art. 17 request received by support", "--json")
                     .stdout)["request_id"]

    banner("5. Erase, purge residue, verify")
    erasure(cfg, "run", rid)
    banner("6. Re-running is safe: nothing is repeated")
    erasure(cfg, "run", rid)
    erasure(cfg, "status", rid)

    banner("7. Independent check with deltalake")
    after = count_subject(info["tables"], subject)
    ok = True
    for name in before:
        (b_mine, b_other), (a_mine, a_other) = before[name], after[name]
        print(f"{name:24} subject rows {b_mine} -> {a_mine}; other rows {b_other} -> {a_other}")
        ok &= a_mine == 0 and a_other == b_other
    if info.get("feast_repo"):
        served = online_features(info["feast_repo"], [subject, neighbour])
        print("Feast online features after:")
        for i, feats in served.items():
            print(f"  author {i}: {feats}")
        ok &= all(v is None for v in served[subject].values())
        ok &= all(v is not None for v in served[neighbour].values())
    email = f"user{subject}@example.com".encode()
    leftovers = [p for p in (out / "tables").rglob("*") if p.is_file()
                 and p.suffix != ".parquet" and email in p.read_bytes()]
    print(f"files under tables/ with the subject's email in plain text: {len(leftovers)}")
    ledger = (out / ".erasure" / "ledger.db").read_bytes()
    print(f"subject id or email in the ledger file: "
          f"{email in ledger or f'user_{subject}'.encode() in ledger}")
    if not ok or leftovers:
        sys.exit("demo: independent check failed")
    banner("Done: subject erased everywhere the lineage reaches; other users intact")


if __name__ == "__main__":
    main()

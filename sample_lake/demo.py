"""`make demo`: build the sample lake and erase one subject end to end with the real CLI.

The lake includes an MLflow registry with two models: `review_sentiment` learned from the
subjects' reviews and features and is flagged for retraining by the run;
`daily_rating_forecast` learned from an aggregate without a subject key and is not.

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


MODELS = ("review_sentiment", "daily_rating_forecast")


def model_flags(uri: str) -> dict[str, dict]:
    """Per registered model: the champion version, its aliases and its erasure.* tags."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out = {}
    for name in MODELS:
        version = client.get_model_version_by_alias(name, "champion").version
        mv = client.get_model_version(name, version)
        out[name] = {"version": str(mv.version), "aliases": list(mv.aliases or []),
                     "erasure_tags": {k: v for k, v in sorted(mv.tags.items())
                                      if k.startswith("erasure.")},
                     "description": mv.description or ""}
    return out


def show_models(flags: dict[str, dict]) -> None:
    for name, f in flags.items():
        print(f"  {name} v{f['version']} (aliases: {', '.join(f['aliases']) or '-'})")
        for k, v in f["erasure_tags"].items():
            print(f"      {k} = {v}")
        if not f["erasure_tags"]:
            print("      no erasure.* tags")


def main() -> None:
    out = Path(os.environ.get("DEMO_DIR", "demo_lake")).resolve()
    rows = int(os.environ.get("DEMO_ROWS", "20000"))
    subject = int(os.environ.get("DEMO_SUBJECT", "42"))
    banner(f"1. Generating the sample lake in {out} ({rows} reviews)")
    info = generate(out, rows=rows, seed=7, force=True, crm=True)
    from sample_lake.generate import crm_email

    address = crm_email(subject).upper()     # as the person writes it in their request
    cfg = Path(info["config"])
    print(f"tables: {', '.join(sorted(info['tables']))}\nconfig: {cfg}")
    before = count_subject(info["tables"], subject)
    neighbour = subject + 1
    if info.get("feast_repo"):
        print("\nFeast online features before (what a model is served):")
        for i, feats in online_features(info["feast_repo"], [subject, neighbour]).items():
            print(f"  author {i}: {feats}")
    if info.get("mlflow_uri"):
        print("\nMLflow registered models before:")
        show_models(model_flags(info["mlflow_uri"]))

    banner("2. Lineage: where does a user's data flow?")
    erasure(cfg, "lineage", "show")

    banner(f"3. Dry run for the person behind user {subject}, who writes in by e-mail "
           "(changes nothing)")
    # the CRM maps the address (any spelling) to user id {subject}; every table keyed by the
    # user id is found through it
    erasure(cfg, "plan", "--identity", f"email={address}")

    banner("4. The Article 17 request, by e-mail")
    rid = json.loads(erasure(cfg, "request", "submit", "--identity", f"email={address}",
                             "--requested-by", "privacy@example.com",
                             "--reason", "Art. 17 request received by support", "--json")
                     .stdout)["request_id"]

    banner("5. Erase, purge residue, verify")
    erasure(cfg, "run", rid)
    flags = None
    if info.get("mlflow_uri"):
        banner("6. MLflow: which models learned from the subject?")
        flags = model_flags(info["mlflow_uri"])
        show_models(flags)
    banner("7. Re-running is safe: nothing is repeated")
    erasure(cfg, "run", rid)
    erasure(cfg, "status", rid)

    banner("8. Independent check with deltalake, Feast and MLflow")
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
    if flags is not None:
        flags = model_flags(info["mlflow_uri"])   # after the re-run, read afresh
        sentiment, forecast = flags["review_sentiment"], flags["daily_rating_forecast"]
        flagged = sentiment["erasure_tags"].get("erasure.retrain_required") == "true"
        request_tagged = f"erasure.request.{rid}" in sentiment["erasure_tags"]
        print(f"review_sentiment v{sentiment['version']} (champion) flagged for retraining: "
              f"{flagged}; tagged with the request: {request_tagged}")
        print(f"daily_rating_forecast v{forecast['version']} (champion) erasure tags: "
              f"{forecast['erasure_tags'] or 'none'}")
        ok &= flagged and request_tagged and not forecast["erasure_tags"]
    from deltalake import DeltaTable

    crm_left = DeltaTable(info["tables"]["crm/customers"]).to_pyarrow_table().column(
        "user_id").to_pylist()
    print(f"CRM rows of user {subject}: {crm_left.count(subject)}; other CRM rows: "
          f"{len(crm_left) - crm_left.count(subject)}")
    ok &= subject not in crm_left and len(crm_left) == info["users"] - 1
    email = f"user{subject}@example.com".encode()
    leftovers = [p for p in (out / "tables").rglob("*") if p.is_file()
                 and p.suffix != ".parquet" and (email in p.read_bytes().lower())]
    print(f"files under tables/ with the subject's email in plain text: {len(leftovers)}")
    ledger = (out / ".erasure" / "ledger.db").read_bytes()
    print(f"subject id or email in the ledger file: "
          f"{email in ledger or f'user_{subject}'.encode() in ledger}")
    if not ok or leftovers:
        sys.exit("demo: independent check failed")
    banner("9. Signed proof of erasure for the auditor")
    erasure(cfg, "keys", "init", "--force")
    proof = out / "proof.pdf"
    erasure(cfg, "report", rid, "--output", str(proof))
    erasure(cfg, "verify-report", str(proof))
    import shutil
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(proof),
                        str(out / "proof-page")], check=True)
        print(f"page one rendered to {out / 'proof-page-1.png'}")
    if shutil.which("pdfsig"):
        sig = subprocess.run(["pdfsig", str(proof)], capture_output=True, text=True).stdout
        print("pdfsig: " + "; ".join(x.strip(" -") for x in sig.splitlines()
                                     if "Validation" in x or "signed" in x))
    banner("Done: subject erased everywhere the lineage reaches; other users intact")


if __name__ == "__main__":
    main()

"""Object stores as first-class storage (issue 13, deliverables 1-4), against a real S3 API:
moto's server in its own process on 127.0.0.1 (conftest's `s3_server`), deltalake writing
real tables to it, the engine talking HTTP to it. Nothing is mocked in-process.

- `[[storage]]`: the longest prefix wins, `[delta.storage_options]` is the default,
  credentials come from the environment;
- the residue scan lists and reads every object under a table's prefix (data files,
  `_change_data/`, `_delta_log/` JSON and checkpoints), and in a versioned bucket every
  noncurrent version;
- the purge deletes the noncurrent versions of what it removed or rewrote; a Parquet dataset
  is rewritten by one PUT, its old version deleted;
- what the store refuses (a bucket policy denying a read, a user without
  s3:ListBucketVersions) is "not verified", never verified.

The subject's id is chosen so that it appears nowhere by chance (7340117): after the erasure
every object version under every prefix is read in full and searched for it.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from connectors.delta import DeltaConnector
from connectors.delta.config import DeltaSettings
from connectors.objectstore import options_for
from connectors.parquet import ParquetConnector
from erasure.cli import run_cli

SUBJECT = 7340117
EMAIL = f"subject-{SUBJECT}@example.org"
TOKEN = re.compile(rf"(?<![0-9.]){SUBJECT}(?![0-9])")


# ---- helpers -------------------------------------------------------------------------------
def _cells(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _cells(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _cells(v)
    else:
        yield obj


def _holds(key: str, body: bytes) -> bool:
    """The whole object decoded and searched: a Parquet cell equal to the id or a string
    holding it or the e-mail; any other object's text holding either."""
    if EMAIL.encode() in body:
        return True
    if key.endswith(".parquet"):
        rows = pq.ParquetFile(io.BytesIO(body)).read().to_pylist()
        return any(c == SUBJECT or (isinstance(c, str) and (EMAIL in c or TOKEN.search(c)))
                   for c in _cells(rows))
    return bool(TOKEN.search(body.decode("utf-8", "replace")))


def versions_holding(client, bucket: str, prefix: str) -> list[str]:
    """Every version (current and noncurrent) under the prefix that holds the subject."""
    bad = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                       Prefix=prefix):
        for v in page.get("Versions", []):
            body = client.get_object(Bucket=bucket, Key=v["Key"],
                                     VersionId=v["VersionId"])["Body"].read()
            if _holds(v["Key"], body):
                bad.append(f"{v['Key']}@{'current' if v['IsLatest'] else 'noncurrent'}")
    return sorted(bad)


def noncurrent_count(client, bucket: str, prefix: str) -> int:
    return sum(1 for page in client.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=prefix) for v in page.get("Versions", []) if not v["IsLatest"])


def rows(uri: str, opts: dict, column: str) -> list:
    return sorted(DeltaTable(uri, storage_options=opts).to_pyarrow_table().column(column)
                  .to_pylist())


def contacts(uri: str, opts: dict, cdf: bool = True, checkpoint: bool = True) -> None:
    """Three commits; the subject is the minimum of the second commit's file (its statistics
    name it), with its e-mail; change data on; a checkpoint at the last commit."""
    others = list(range(SUBJECT + 1, SUBJECT + 30))
    conf = {"delta.enableChangeDataFeed": "true"} if cdf else None
    write_deltalake(uri, pa.table({"id": pa.array(others[:10], pa.int64()),
                                   "email": [f"u{i}@example.org" for i in others[:10]]}),
                    storage_options=opts, configuration=conf)
    write_deltalake(uri, pa.table({"id": pa.array([SUBJECT, *others[10:20]], pa.int64()),
                                   "email": [EMAIL] + [f"u{i}@example.org"
                                                       for i in others[10:20]]}),
                    mode="append", storage_options=opts)
    write_deltalake(uri, pa.table({"id": pa.array(others[20:], pa.int64()),
                                   "email": [f"u{i}@example.org" for i in others[20:]]}),
                    mode="append", storage_options=opts)
    if checkpoint:
        DeltaTable(uri, storage_options=opts).create_checkpoint()


def orders(uri: str, opts: dict) -> None:
    """The key renamed (customer_id); the subject is the maximum of its file."""
    ids = [SUBJECT - 5, SUBJECT - 3, SUBJECT, SUBJECT]
    write_deltalake(uri, pa.table({"customer_id": pa.array(ids, pa.int64()),
                                   "amount": pa.array([10, 20, 30, 40], pa.int64())}),
                    storage_options=opts)
    write_deltalake(uri, pa.table({"customer_id": pa.array([SUBJECT - 9], pa.int64()),
                                   "amount": pa.array([50], pa.int64())}),
                    mode="append", storage_options=opts)


def parquet_export(client, bucket: str, prefix: str) -> None:
    for i, ids in enumerate([[SUBJECT - 1, SUBJECT, SUBJECT + 1], [SUBJECT + 2, SUBJECT + 3]]):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"user_id": pa.array(ids, pa.int64()),
                                 "note": [f"n{x}" for x in ids]}), sink)
        client.put_object(Bucket=bucket, Key=f"{prefix}/part-{i}.parquet",
                          Body=sink.getvalue().to_pybytes())


def versioned(client, bucket: str) -> None:
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


# ---- [[storage]] ---------------------------------------------------------------------------
class _Entry:
    def __init__(self, prefix, options):
        self.prefix, self.options = prefix, options


def test_the_longest_matching_prefix_wins_and_the_default_stays():
    storage = [_Entry("s3://acme-lake", {"AWS_REGION": "a"}),
               _Entry("s3://acme-lake/crm/", {"AWS_REGION": "b"})]
    default = {"AWS_REGION": "default"}
    assert options_for("s3://acme-lake/crm/contacts", storage, default) == {"AWS_REGION": "b"}
    assert options_for("s3://acme-lake/crmx/t", storage, default) == {"AWS_REGION": "a"}
    assert options_for("s3://acme-lake", storage, default) == {"AWS_REGION": "a"}
    assert options_for("s3://acme-lake2/t", storage, default) == default
    assert options_for("gs://acme-lake/t", storage, default) == default


def test_storage_entries_are_checked_strictly(tmp_path):
    def load(text: str):
        from erasure.config import load_config

        cfg = tmp_path / "e.toml"
        cfg.write_text('[lineage]\nevents = []\n[[roots]]\nnamespace = "s3://b"\nname = "t"\n'
                       'column = "id"\n' + text)
        return load_config(cfg)

    from erasure.errors import ConfigError

    cfg = load('[[storage]]\nprefix = "s3://b"\n[storage.options]\nAWS_REGION = "x"\n')
    assert [(s.prefix, dict(s.options)) for s in cfg.storage] == [("s3://b", {"AWS_REGION": "x"})]
    assert load('[[storage]]\nprefix = "s3://b/crm"\n').storage[0].options == {}
    for bad, said in [('[[storage]]\nprefix = "/data/lake"\n', "object-store prefix"),
                      ('[[storage]]\nprefix = "s3://"\n', "object-store prefix"),
                      ('[[storage]]\nprefx = "s3://b"\n', "did you mean 'prefix'"),
                      ('[[storage]]\nprefix = "s3://b"\noptions = {AWS_ALLOW_HTTP = true}\n',
                       "must be a non-empty string"),
                      ('[[storage]]\nprefix = "s3://b"\n[[storage]]\nprefix = "s3://b/"\n',
                       "more than once"),
                      ('[[storage]]\noptions = {}\n', "needs 'prefix'")]:
        with pytest.raises(ConfigError) as exc:
            load(bad)
        assert said in str(exc.value), (bad, str(exc.value))


# ---- the scan and the purge on a bucket, connector level ----------------------------------
def test_plain_bucket_scan_finds_stats_change_data_and_checkpoint_then_purge_clears_all(
        s3_server):
    opts, client, bucket = s3_server.options, s3_server.client, s3_server.bucket
    uri = f"s3://{bucket}/crm/contacts"
    contacts(uri, opts)
    c = DeltaConnector(DeltaSettings(residue="purge"), storage=[_Entry(f"s3://{bucket}", opts)])
    assert c.handles(f"s3://{bucket}", "crm/contacts")
    before = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    assert before.rows == {SUBJECT: 1} and len(before.files[SUBJECT]) == 1
    assert before.not_verified == []
    # the subject bounds the second file's statistics: its commit and the checkpoint name it
    assert any("_delta_log/00000000000000000001.json (log entry)" == r
               for r in before.residue[SUBJECT]), before.residue
    assert any("checkpoint.parquet (log checkpoint)" in r for r in before.residue[SUBJECT])
    assert c.erase(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT], "t1").rows_deleted == 1
    mid = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    assert any("_change_data/" in r and "(change data file)" in r for r in mid.residue[SUBJECT])
    assert any(r.endswith("(data file)") for r in mid.residue[SUBJECT])
    others = [x for x in rows(uri, opts, "id") if x != SUBJECT]
    res = c.purge(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT], "t1")
    assert res.evidence()["object_store"] == uri
    assert res.evidence()["noncurrent_versions_deleted"] == 0      # not versioned
    after = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    assert after.rows == {SUBJECT: 0} and after.residue == {SUBJECT: []}, after
    assert after.not_verified == []
    assert versions_holding(client, bucket, "crm/contacts/") == []
    assert rows(uri, opts, "id") == others


def test_versioned_bucket_noncurrent_versions_are_counted_deleted_and_checked(s3_server):
    opts, client, bucket = s3_server.options, s3_server.client, s3_server.bucket
    versioned(client, bucket)
    uri = f"s3://{bucket}/crm/contacts"
    contacts(uri, opts)
    # an object of the table overwritten before the erasure: the old bytes live on as a
    # noncurrent version, which the plan's count reports
    key = "crm/contacts/_delta_log/_last_checkpoint"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body)
    holder = f"crm/contacts/notes/{SUBJECT}.json"
    client.put_object(Bucket=bucket, Key=holder, Body=json.dumps({"id": SUBJECT}).encode())
    client.put_object(Bucket=bucket, Key=holder, Body=b"{}")        # now a noncurrent version
    # a Parquet object once holding the subject, overwritten: its old version holds it
    for ids in ([SUBJECT, SUBJECT + 50], [SUBJECT + 50]):
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), sink)
        client.put_object(Bucket=bucket, Key="crm/contacts/old/part-x.parquet",
                          Body=sink.getvalue().to_pybytes())
    c = DeltaConnector(DeltaSettings(residue="purge", storage_options=opts))
    planned = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    assert planned.not_verified == []
    old = [r for r in planned.residue[SUBJECT] if "(noncurrent version of" in r]
    assert len(old) == 1 and old[0].startswith("old/part-x.parquet?versionId=") \
        and old[0].endswith("(noncurrent version of data file)"), planned.residue
    c.erase(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT], "t1")
    mid = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    kept = noncurrent_count(client, bucket, "crm/contacts/")
    res = c.purge(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT], "t1")
    assert res.evidence()["noncurrent_versions_deleted"] > 0
    after = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    assert after.residue == {SUBJECT: []} and after.not_verified == [], after
    holding = versions_holding(client, bucket, "crm/contacts/")
    # only the text file the test wrote beside the table, never read for an integer key,
    # still holds it: the purge deletes versions of what it removed or rewrote, and those a
    # scan finds holding a key, nothing else
    assert holding == [f"{holder}@noncurrent"], holding
    assert kept and mid.residue[SUBJECT]


def test_parquet_dataset_on_a_versioned_bucket_is_rewritten_and_its_old_version_deleted(
        s3_server):
    opts, client, bucket = s3_server.options, s3_server.client, s3_server.bucket
    versioned(client, bucket)
    parquet_export(client, bucket, "exports/users")
    c = ParquetConnector(default_options=opts)
    d = DeltaConnector(DeltaSettings(storage_options=opts))
    ns = f"s3://{bucket}"
    assert c.handles(ns, "exports/users") and not d.handles(ns, "exports/users")
    assert c.key_type(ns, "exports/users", "user_id") == "int64"
    counted = c.count(ns, "exports/users", "user_id", [SUBJECT])
    assert counted.rows == {SUBJECT: 1} and counted.files == {SUBJECT: ["part-0.parquet"]}
    res = c.erase(ns, "exports/users", "user_id", [SUBJECT], "t1")
    assert (res.rows_deleted, res.files_removed) == (1, 1)
    after = c.count(ns, "exports/users", "user_id", [SUBJECT])
    assert after.rows == {SUBJECT: 0} and after.residue == {SUBJECT: []}
    assert after.not_verified == []
    assert versions_holding(client, bucket, "exports/") == []
    t = pq.ParquetFile(io.BytesIO(client.get_object(Bucket=bucket, Key="exports/users/part-0.parquet")
                                  ["Body"].read())).read()
    assert t.column("user_id").to_pylist() == [SUBJECT - 1, SUBJECT + 1]
    # a single object as the dataset
    assert c.count(ns, "exports/users/part-1.parquet", "user_id", [SUBJECT + 2]).rows == {
        SUBJECT + 2: 1}


# ---- what the store refuses is never verified ----------------------------------------------
def forbidden_object(client, bucket: str) -> None:
    """A data file under the table (another writer's, uncommitted) that a bucket policy
    forbids everyone to read (moto enforces a bucket policy's Deny on object requests)."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": pa.array([SUBJECT + 99], pa.int64())}), sink)
    client.put_object(Bucket=bucket, Key="crm/contacts/part-foreign.parquet",
                      Body=sink.getvalue().to_pybytes())
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/crm/contacts/part-foreign.parquet"}]}))


def test_an_object_a_bucket_policy_forbids_reading_is_not_verified(s3_server):
    opts, client, bucket = s3_server.options, s3_server.client, s3_server.bucket
    uri = f"s3://{bucket}/crm/contacts"
    contacts(uri, opts, cdf=False, checkpoint=False)
    # an uncommitted data file another writer left, that the engine may not read
    forbidden_object(client, bucket)
    c = DeltaConnector(DeltaSettings(storage_options=opts))
    counted = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    assert counted.rows == {SUBJECT: 1}
    [why] = counted.not_verified
    assert "part-foreign.parquet" in why and "refused" in why and "not proven" in why
    assert str(SUBJECT) not in why


def test_a_run_that_may_not_read_an_object_ends_not_verified_never_completed(
        s3_server, tmp_path, capsys, monkeypatch):
    """Through the CLI: the erase and purge run, the verification cannot read one object, so
    the request is incomplete (exit 6) and its status says why; it is never completed."""
    opts, client, bucket = s3_server.options, s3_server.client, s3_server.bucket
    contacts(f"s3://{bucket}/crm/contacts", opts, cdf=False, checkpoint=False)
    forbidden_object(client, bucket)
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    table = "\n".join(f'{k} = "{v}"' for k, v in opts.items())
    cfg = tmp_path / "erasure.toml"
    cfg.write_text(f'[lineage]\nevents = []\n[[roots]]\nnamespace = "s3://{bucket}"\n'
                   f'name = "crm/contacts"\ncolumn = "id"\n[[storage]]\n'
                   f'prefix = "s3://{bucket}/crm"\n[storage.options]\n{table}\n')
    code, sub, err = _cli(cfg, capsys, "request", "submit", "--subject-id", str(SUBJECT))
    rid = sub["request_id"]
    code, res, err = _cli(cfg, capsys, "run", rid)
    assert code == 6, (code, res, err)
    code, st, err = _cli(cfg, capsys, "status", rid)
    assert st["status"] == "incomplete", st
    said = json.dumps(st)
    assert "not verified" in said and "part-foreign.parquet was refused" in said, said
    assert str(SUBJECT) not in said
    assert rows(f"s3://{bucket}/crm/contacts", opts, "id") == list(range(SUBJECT + 1,
                                                                          SUBJECT + 30))


def _restricted_user(endpoint: str, bucket: str, deny: list[str]) -> dict:
    """An IAM user allowed everything on S3 but `deny`; then moto starts enforcing IAM."""
    import boto3
    import requests

    iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="test",
                       aws_secret_access_key="test", region_name="us-east-1")
    iam.create_user(UserName="engine")
    iam.put_user_policy(UserName="engine", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": deny, "Resource": "*"}]}))
    key = iam.create_access_key(UserName="engine")["AccessKey"]
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0").raise_for_status()
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_without_list_bucket_versions_the_versions_are_not_verified(s3_server):
    opts, client, bucket = s3_server.options, s3_server.client, s3_server.bucket
    versioned(client, bucket)
    uri = f"s3://{bucket}/crm/contacts"
    contacts(uri, opts, cdf=False, checkpoint=False)
    user = {**opts, **_restricted_user(opts["AWS_ENDPOINT_URL"], bucket,
                                       ["s3:ListBucketVersions"])}
    c = DeltaConnector(DeltaSettings(storage_options=user))
    counted = c.count(f"s3://{bucket}", "crm/contacts", "id", [SUBJECT])
    assert counted.rows == {SUBJECT: 1}          # the engine reads the table as this user
    [why] = counted.not_verified
    assert "s3:ListBucketVersions" in why and "noncurrent versions" in why
    assert "not checked" in why


# ---- the acceptance: the real CLI, three Delta tables and a Parquet dataset ----------------
def _cli(cfg: Path, capsys, *args: str) -> tuple[int, dict | None, str]:
    code = run_cli(["--config", str(cfg), *args, "--json"])
    cap = capsys.readouterr()
    return code, (json.loads(cap.out) if cap.out.strip() else None), cap.err


def test_a_request_erases_the_subject_from_three_tables_and_a_parquet_dataset_on_s3(
        s3_server, tmp_path, capsys, monkeypatch):
    opts, client, bucket = s3_server.options, s3_server.client, s3_server.bucket
    plain = bucket + "-plain"
    client.create_bucket(Bucket=plain)
    versioned(client, bucket)
    ns, ns2 = f"s3://{bucket}", f"s3://{plain}"
    contacts(f"{ns}/crm/contacts", opts)
    orders(f"{ns}/sales/orders", opts)
    contacts(f"{ns2}/events/clicks", opts, cdf=False)
    parquet_export(client, bucket, "exports/users")
    keep = {"contacts": [x for x in rows(f"{ns}/crm/contacts", opts, "id") if x != SUBJECT],
            "orders": [x for x in rows(f"{ns}/sales/orders", opts, "customer_id")
                       if x != SUBJECT],
            "clicks": [x for x in rows(f"{ns2}/events/clicks", opts, "id") if x != SUBJECT]}
    # credentials from the environment only; the endpoint per prefix in [[storage]]; the
    # default [delta.storage_options] points nowhere, so a table that took it would fail
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, opts[k])
    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    endpoint = {k: v for k, v in opts.items()
                if k in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION",
                         "AWS_S3_ALLOW_UNSAFE_RENAME")}
    table = "\n".join(f'{k} = "{v}"' for k, v in endpoint.items())
    cfg = tmp_path / "erasure.toml"
    cfg.write_text(f"""
[lineage]
events = []

[[roots]]
namespace = "{ns}"
name = "crm/contacts"
column = "id"

[[roots]]
namespace = "{ns}"
name = "sales/orders"
column = "customer_id"

[[roots]]
namespace = "{ns2}"
name = "events/clicks"
column = "id"

[[roots]]
namespace = "{ns}"
name = "exports/users"
column = "user_id"

[delta]
orphan_grace = "0s"

[delta.storage_options]
AWS_ENDPOINT_URL = "http://127.0.0.1:9"
AWS_ALLOW_HTTP = "true"

[[storage]]
prefix = "{ns}"
[storage.options]
{table}

[[storage]]
prefix = "{ns2}/events"
[storage.options]
{table}
""")
    code, plan, err = _cli(cfg, capsys, "plan", "--subject-id", str(SUBJECT))
    assert code == 0, err
    by_name = {t["name"]: t for t in plan["targets"]}
    assert {n: by_name[n]["rows"] for n in by_name} == {
        "crm/contacts": 1, "sales/orders": 2, "events/clicks": 1, "exports/users": 1}
    assert by_name["crm/contacts"]["residue_now"] and by_name["crm/contacts"]["not_verified"] == []
    prefixes = [(bucket, "crm/contacts/"), (bucket, "sales/orders/"),
                (plain, "events/clicks/"), (bucket, "exports/users/")]
    assert all(versions_holding(client, b, p) for b, p in prefixes), "precondition"
    code, sub, err = _cli(cfg, capsys, "request", "submit", "--subject-id", str(SUBJECT))
    assert code == 0, err
    rid = sub["request_id"]
    code, res, err = _cli(cfg, capsys, "run", rid)
    assert code == 0, (err, res)
    code, st, err = _cli(cfg, capsys, "status", rid)
    assert code == 0 and st["status"] == "completed", st
    for b, prefix in prefixes:
        assert versions_holding(client, b, prefix) == [], (b, prefix)
    assert rows(f"{ns}/crm/contacts", opts, "id") == keep["contacts"]
    assert rows(f"{ns}/sales/orders", opts, "customer_id") == keep["orders"]
    assert rows(f"{ns2}/events/clicks", opts, "id") == keep["clicks"]
    left = pq.ParquetFile(io.BytesIO(client.get_object(
        Bucket=bucket, Key="exports/users/part-1.parquet")["Body"].read())).read()
    assert left.column("user_id").to_pylist() == [SUBJECT + 2, SUBJECT + 3]
    assert _cli(cfg, capsys, "keys", "init")[0] == 0
    pdf = tmp_path / "proof.pdf"
    code, _, err = _cli(cfg, capsys, "report", rid, "--output", str(pdf))
    assert code == 0, err
    code, rep, err = _cli(cfg, capsys, "verify-report", str(pdf))
    assert code == 0, (err, rep)
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True,
                                   text=True, check=True).stdout.split())
    assert "object-store prefixes" in text and "noncurrent version" in text, text[-3000:]
    assert str(SUBJECT) not in text

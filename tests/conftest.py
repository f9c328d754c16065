"""Shared fixtures: a freshly generated sample lake per test, and the CLI run in-process."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from erasure.cli import run_cli

# Real inputs written by others, copied unchanged into the repository (tests/data/PROVENANCE.md
# names each source, commit and licence). Nothing outside the repository is read.
TESTDATA = Path(__file__).resolve().parent / "data"


@dataclass
class Lake:
    root: Path
    config: Path
    tables: dict[str, str]
    events: Path

    @property
    def delta_tables(self) -> dict[str, str]:
        return {n: p for n, p in self.tables.items() if not p.endswith(".parquet")}

    last_err: str = ""

    def cli(self, *args: str, capsys=None) -> tuple[int, str]:
        code = run_cli(["--config", str(self.config), *args])
        out = ""
        if capsys:
            captured = capsys.readouterr()
            out, self.last_err = captured.out, captured.err
        return code, out

    def cli_json(self, capsys, *args: str) -> tuple[int, dict]:
        code, out = self.cli(*args, "--json", capsys=capsys)
        return code, json.loads(out)


@pytest.fixture
def lake(tmp_path, monkeypatch) -> Lake:
    from sample_lake.generate import generate

    monkeypatch.delenv("ERASURE_SUBJECT_KEY", raising=False)
    monkeypatch.delenv("ERASURE_CONFIG", raising=False)
    info = generate(tmp_path / "lake", rows=2000, seed=11, feast=False, mlflow=False)
    return Lake(Path(info["out_dir"]), Path(info["config"]), info["tables"], Path(info["events"]))


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"     # the machine's server (trust auth)


@contextmanager
def postgres_ledger(lake: Lake) -> Iterator[str]:
    """Move `lake`'s ledger to a fresh schema of the machine's PostgreSQL (`[ledger] url`,
    erasure/ledger_pg.py), dropped afterwards; yields the URL."""
    import uuid

    import psycopg2

    schema = "erasure_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(POSTGRES)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    text = lake.config.read_text()
    assert '[ledger]\npath = ".erasure/ledger.db"' in text
    lake.config.write_text(text.replace('[ledger]\npath = ".erasure/ledger.db"',
                                        f'[ledger]\nurl = "{url}"'))
    try:
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def read_table(path: str):
    """Every live row of a Delta table (deletion vectors applied), as a pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, QueryBuilder

    if not (Path(path) / "_delta_log").is_dir():
        return pq.read_table(path)       # a plain Parquet file or folder
    return pa.table(QueryBuilder().register("t", DeltaTable(path)).execute("SELECT * FROM t").read_all())


def rows_without(path: str, column: str, value) -> list[tuple]:
    t = read_table(path)
    names = sorted(t.column_names)
    return sorted(tuple(str(r[n]) for n in names) for r in t.to_pylist() if r[column] != value)


def files_holding(root: Path, needles: list[bytes], key_columns: dict[str, object]) -> list[str]:
    """Walk every file under `root`: Parquet is decoded (key columns compared, every string
    cell searched), everything else is searched as bytes. Returns offending paths."""
    import pyarrow.parquet as pq

    bad = []
    for p in sorted(root.rglob("*")):
        if p.is_dir():
            if any(f"{c}={v}" == p.name for c, v in key_columns.items()):
                bad.append(str(p))
            continue
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            for row in t.to_pylist():
                for col, cell in _flatten(row):
                    if col in key_columns and cell == key_columns[col]:
                        bad.append(f"{p} ({col})")
                    if isinstance(cell, str) and any(n.decode() in cell for n in needles):
                        bad.append(f"{p} ({col})")
        else:
            data = p.read_bytes()
            if any(n in data for n in needles):
                bad.append(str(p))
    return sorted(set(bad))


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _flatten(v, prefix)
    else:
        yield prefix, obj


@dataclass
class S3:
    options: dict          # deltalake storage options for this server
    client: object         # a boto3 S3 client
    bucket: str            # an empty bucket of this test's own


@pytest.fixture
def s3_server(tmp_path):
    """A real S3 API (moto's server) in its own process on 127.0.0.1, with an empty bucket.
    Its own process, not a thread: delta-rs holds the GIL while it reads, which stalls an
    in-process ThreadedMotoServer. If it cannot start, the test fails; it is never skipped."""
    import socket
    import subprocess
    import sys
    import time
    import uuid

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                             "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the moto S3 server did not start: "
                                + (tmp_path / "moto.log").read_text()[-2000:])
                time.sleep(0.1)
        bucket = f"lake-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        yield S3({"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
                  "AWS_S3_ALLOW_UNSAFE_RENAME": "true", "AWS_ACCESS_KEY_ID": "test",
                  "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}, client, bucket)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


# ---- Feast (tests/feast_helpers.py builds the repos) ----------------------------------------
@pytest.fixture(scope="module")
def feast():
    """Feast imported once for the module (the import alone takes ~10 s)."""
    import feast
    import feast.data_format
    import feast.infra.key_encoding_utils
    import feast.infra.online_stores.helpers
    import feast.protos.feast.types.EntityKey_pb2
    import feast.protos.feast.types.Value_pb2
    import feast.repo_operations
    import feast.types

    return feast


@pytest.fixture
def redis_project():
    """A project name of its own in the shared Redis; its keys are deleted afterwards."""
    import redis
    from uuid import uuid4

    from feast_helpers import REDIS

    project = f"t{uuid4().hex[:8]}"
    yield project
    client = redis.Redis.from_url(f"redis://{REDIS}")
    keys = list(client.scan_iter(b"*" + project.encode(), count=1000))
    if keys:
        client.delete(*keys)
    client.close()

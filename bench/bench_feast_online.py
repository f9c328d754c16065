"""Benchmark: erase 1 and 1,000 entities from a Feast online store holding 1,000,000 entities.

SQLite and Redis (127.0.0.1:6379). The store is filled with Feast's own key and value
encoding (one feature view, two features). Each measurement runs BENCH_REPEAT times (3),
engine and raw alternating, each time on entities of its own; the medians are printed:
  - engine: FeastConnector.erase (builds the keys with Feast's encoding, deletes, zeroes
    freed SQLite pages; Redis: the erase script) followed by FeastConnector.count without
    residue (the verification's look in the store), on a connector that has loaded its
    registry and, as in a run, counted the subject's keys just before (the guard);
  - raw: the bare store operation on the same number of prebuilt keys (SQLite DELETE ... IN,
    Redis pipelined DEL on a client connected before the clock starts).
The ratio is engine / raw. Also printed, outside the ratio: the guard's count before the
erase and the whole verification after it (store, get_online_features, source files).
The last lines are the ratios for 1,000 entities (Redis goal <= 1.5x, issue 12).
BENCH_ENTITIES changes the store size. Prints the figures; asserts nothing about speed.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N = int(os.environ.get("BENCH_ENTITIES", "1000000"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
FEATURES = ("clicks", "score")


def make_repo(base: Path, online: str, project: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = base / f"repo_{online}"
    (repo / "data").mkdir(parents=True)
    src = repo / "data" / "src.parquet"
    pq.write_table(pa.table({"entity_id": pa.array([1], pa.int64()), "clicks": [1], "score": [1],
                             "event_timestamp": pa.array([datetime.now(timezone.utc)],
                                                         pa.timestamp("us", tz="UTC"))}), src)
    store = ({"type": "sqlite", "path": "data/online.db"} if online == "sqlite"
             else {"type": "redis", "connection_string": "127.0.0.1:6379"})
    import yaml
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": project, "registry": "data/registry.db", "provider": "local",
        "online_store": store, "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3}))
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64

    ent = Entity(name="user", join_keys=["entity_id"], value_type=ValueType.INT64)
    fv = FeatureView(name="user_stats", entities=[ent], ttl=timedelta(days=3650), online=True,
                     schema=[Field(name=f, dtype=Int64) for f in FEATURES],
                     source=FileSource(path=str(src), timestamp_field="event_timestamp"))
    FeatureStore(repo_path=str(repo)).apply([ent, fv])
    return repo


def fill(repo: Path, online: str, project: str) -> float:
    from feast import FeatureStore
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    ts = Timestamp()
    ts.FromDatetime(now)
    tsb = ts.SerializeToString()
    vals = {f: Value(int64_val=7).SerializeToString() for f in FEATURES}
    store = FeatureStore(repo_path=str(repo))
    if online == "sqlite":
        import sqlite3

        from feast.infra.online_stores.sqlite import SqliteOnlineStore
        db = sqlite3.connect(SqliteOnlineStore._get_db_path(store.config))
        table = f"{project}_user_stats"
        for start in range(1, N + 1, 100_000):
            rows = []
            for i in range(start, min(start + 100_000, N + 1)):
                k = serialize_entity_key(EntityKey(join_keys=["entity_id"],
                                                   entity_values=[Value(int64_val=i)]), 3)
                for f in FEATURES:
                    rows.append((k, f, vals[f], now, now))
            db.executemany(f'INSERT INTO "{table}" (entity_key, feature_name, value, event_ts, '
                           f'created_ts) VALUES (?, ?, ?, ?, ?)', rows)
            db.commit()
        db.close()
    else:
        from feast.infra.online_stores.redis import RedisOnlineStore
        r = RedisOnlineStore()._get_client(store.config.online_store)
        fields = {b"_ts:user_stats": tsb, **{_mmh3(f"user_stats:{f}"): vals[f] for f in FEATURES}}
        suffix = project.encode()
        for start in range(1, N + 1, 20_000):
            with r.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + 20_000, N + 1)):
                    k = serialize_entity_key(EntityKey(join_keys=["entity_id"],
                                                       entity_values=[Value(int64_val=i)]), 3)
                    pipe.hset(k + suffix, mapping=fields)
                pipe.execute()
    return time.perf_counter() - t0


def raw_delete(repo: Path, online: str, project: str, ids: list[int]) -> float:
    from feast import FeatureStore
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = FeatureStore(repo_path=str(repo))
    keys = [serialize_entity_key(EntityKey(join_keys=["entity_id"],
                                           entity_values=[Value(int64_val=i)]), 3) for i in ids]
    if online == "sqlite":
        import sqlite3

        from feast.infra.online_stores.sqlite import SqliteOnlineStore
        t0 = time.perf_counter()    # the engine opens its SQLite connection in the erase too
        db = sqlite3.connect(SqliteOnlineStore._get_db_path(store.config))
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            db.execute(f'DELETE FROM "{project}_user_stats" WHERE entity_key IN '
                       f'({",".join("?" * len(chunk))})', chunk)
        db.commit()
        db.close()
    else:
        from feast.infra.online_stores.redis import RedisOnlineStore
        r = RedisOnlineStore()._get_client(store.config.online_store)
        r.ping()    # connected before the clock starts, as the engine's client is by its erase
        t0 = time.perf_counter()
        with r.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.delete(k + project.encode())
            pipe.execute()
    return time.perf_counter() - t0


def engine_delete(repo: Path, project: str, ids: list[int]) -> dict[str, float]:
    """The engine's erase of `ids`, timed in parts (seconds): `erase` (FeastConnector.erase:
    keys built with Feast's encoding, the delete) and `check` (FeastConnector.count without
    residue: the verification's look in the store), the two the ratio is taken on; and, as
    the engine runs them around an erase, `pre` (live_rows: the guard's count just before)
    and `verify` (the whole verification: the store, get_online_features, the source files)."""
    from connectors.feast import FeastConnector

    ns = f"feast://{project}"
    conn = FeastConnector([repo])
    conn.repo_for(ns).view("user_stats")   # registry load (once per run in the engine), not timed
    t0 = time.perf_counter()
    present = conn.live_rows(ns, "user_stats", "entity_id", ids)
    t1 = time.perf_counter()
    res = conn.erase(ns, "user_stats", "entity_id", ids, "bench")
    t2 = time.perf_counter()
    left = conn.count(ns, "user_stats", "entity_id", ids, with_residue=False)
    t3 = time.perf_counter()
    full = conn.count(ns, "user_stats", "entity_id", ids, with_residue=True)
    t4 = time.perf_counter()
    assert sum(present.values()) == res.rows_deleted == len(ids), "erase incomplete"
    assert not any(left.rows.values()) and not any(full.rows.values()), "erase incomplete"
    assert not any(full.residue.values()), "still served"
    return {"pre": t1 - t0, "erase": t2 - t1, "check": t3 - t2, "verify": t4 - t3}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench_feast_"))
    rng = random.Random(3)
    print(f"online stores with {N:,} entities, feature view user_stats (2 features); "
          f"median of {REPEAT} runs, each on entities of its own")
    ratios = []
    try:
        for online in ("sqlite", "redis"):
            project = f"bench{uuid.uuid4().hex[:6]}"
            repo = make_repo(base, online, project)
            fill_s = fill(repo, online, project)
            print(f"\n{online}: filled in {fill_s:.1f}s")
            picks = iter(rng.sample(range(1, N + 1), REPEAT * 2 * (1 + 1000)))
            for label, size in (("1 entity", 1), ("1,000 entities", 1000)):
                runs, raws = [], []
                for _ in range(REPEAT):     # engine and raw alternate, on different entities
                    runs.append(engine_delete(repo, project, [next(picks) for _ in range(size)]))
                    raws.append(raw_delete(repo, online, project,
                                           [next(picks) for _ in range(size)]))
                e = {part: statistics.median(r[part] for r in runs) for part in runs[0]}
                engine = statistics.median(r["erase"] + r["check"] for r in runs)
                raw = statistics.median(raws)
                print(f"  {label:15} engine erase {ms(e['erase'])} + store check {ms(e['check'])}"
                      f" = {ms(engine)}   raw delete {ms(raw)}   ratio {engine / raw:5.2f}x")
                whole = statistics.median(sum(r.values()) for r in runs)
                print(f"  {'':15} around it in a run: guard's count before {ms(e['pre'])}, "
                      f"whole verification {ms(e['verify'])} (store, get_online_features, "
                      f"source files); all four {ms(whole)}")
                if size == 1000:
                    goal = "goal <= 1.5x" if online == "redis" else "goal: report only"
                    ratios.append(f"ratio {online} 1,000 entities: {engine / raw:.2f}x ({goal})")
            if online == "redis":
                from feast import FeatureStore
                from feast.infra.online_stores.redis import RedisOnlineStore
                r = RedisOnlineStore()._get_client(FeatureStore(repo_path=str(repo)).config.online_store)
                for k in r.scan_iter(b"*" + project.encode(), count=50_000):
                    r.delete(k)
        print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        print("\n".join(["", *ratios]))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

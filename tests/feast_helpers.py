"""Building real Feast repos for the tests: a repo folder with a SQLite or Redis online store,
hourly feature rows per entity, a feature view over a Parquet or Delta source, materialize,
and reading back what the store serves. The `feast` and `redis_project` fixtures are in
conftest.py. Feast itself is imported by the callers (through the `feast` fixture)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
MAT_START = datetime(2020, 1, 1, tzinfo=timezone.utc)
REDIS = "127.0.0.1:6379"
STATS = ["trips", "rating", "nickname"]


def write_repo(repo: Path, project: str, online: str = "sqlite") -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    store = ({"type": "sqlite", "path": "data/online_store.db"} if online == "sqlite"
             else {"type": "redis", "connection_string": REDIS})
    lines = [f"project: {project}", "registry: data/registry.db", "provider: local",
             "online_store:"] + [f"    {k}: {json.dumps(v)}" for k, v in store.items()] + [
             "offline_store:", "    type: file", "entity_key_serialization_version: 3"]
    (repo / "feature_store.yaml").write_text("\n".join(lines) + "\n")
    return repo


def online(store, view: str, features: list[str], key: str, ids: list) -> dict:
    """What get_online_features serves: {id: {feature: value}}."""
    res = store.get_online_features(features=[f"{view}:{f}" for f in features],
                                    entity_rows=[{key: i} for i in ids]).to_dict()
    return {i: {f: res[f][n] for f in features} for n, i in enumerate(ids)}


def materialize(store) -> None:
    store.materialize(MAT_START, datetime.now(timezone.utc) + timedelta(days=1))


def entity_key_bytes(feast, join_keys: list[str], values: list) -> bytes:
    """The key exactly as Feast serializes it for the online store."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    vals = [Value(int64_val=v) if isinstance(v, int) else Value(string_val=v) for v in values]
    return serialize_entity_key(EntityKey(join_keys=join_keys, entity_values=vals),
                                entity_key_serialization_version=3)


def stats_rows(ids: list, hours: int = 4, key: str = "entity_id", tag: str = "",
               start: datetime = T0) -> list[dict]:
    """A few hourly feature rows per entity; the latest row is what goes online."""
    out = []
    for i in ids:
        for h in range(hours):
            n = int(i) if isinstance(i, int) else sum(map(ord, i))
            out.append({key: i, "trips": n * 10 + h, "rating": n / 10 + h / 100,
                        "nickname": f"nick-{i}-{tag}{h}-secret",
                        "event_timestamp": start + timedelta(hours=h)})
    return out


def stats_table(rows: list[dict], key_type) -> pa.Table:
    key = next(iter(rows[0]))
    return pa.Table.from_pylist(rows, schema=pa.schema([
        (key, key_type), ("trips", pa.int64()), ("rating", pa.float64()),
        ("nickname", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]))


def stats_view(feast, name: str, entity, key: str, key_dtype, source_path: Path,
               delta: bool = True):
    from feast.types import Float64, Int64, String

    src = feast.FileSource(
        name=f"{name}_source", path=str(source_path), timestamp_field="event_timestamp",
        **({"file_format": feast.data_format.DeltaFormat()} if delta else {}))
    return feast.FeatureView(
        name=name, entities=[entity], ttl=timedelta(days=3650), online=True, source=src,
        schema=[feast.Field(name=key, dtype=key_dtype), feast.Field(name="trips", dtype=Int64),
                feast.Field(name="rating", dtype=Float64),
                feast.Field(name="nickname", dtype=String)])

"""One Feast repo as the connector sees it: its views, their keys, its online store.

Only this module imports feast (lazily: `import feast` takes 7-12 s)."""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

from erasure.errors import ConfigError, UnknownDatasetError

from ..keymatch import comparable, key_counts

# Feast ValueType name -> the arrow type name our key coercion understands
KEY_TYPES = {"INT64": "int64", "INT32": "int32", "STRING": "string"}
CHUNK = 500
# how serialize_entity_key ends a key: the value's ValueType id, its length, its bytes
_TAIL = {"int64": (4, struct.Struct("<IIq")), "int32": (3, struct.Struct("<IIi")),
         "string": (2, struct.Struct("<II"))}
_KEY_SAMPLES: dict[str, tuple[Any, ...]] = {
    "int64": (0, 1, -1, 1001, 2 ** 63 - 1, -2 ** 63),
    "int32": (0, 1, -1, 1001, 2 ** 31 - 1, -2 ** 31),
    "string": ("", "a", "1001", "ü€𝄞 x")}

# Redis: one script call per batch of keys, run atomically by Redis (a batch is one round trip
# however many keys it has; REDIS_BATCH bounds how long one call holds the server).
# KEYS: the entity hashes; ARGV: the view's fields, `_ts:<view>` first.
REDIS_BATCH = 5000
# '1' per key whose hash holds any of the view's fields, '0' otherwise
_PRESENT_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = '0'
  for j = 1, #ARGV do
    if redis.call('HEXISTS', key, ARGV[j]) == 1 then out[i] = '1' break end
  end
end
return table.concat(out)
"""
# For each hash holding any of the view's fields: delete those fields, and the whole hash
# when fields remain but none is another view's timestamp (`_ts:`). Calls whose replies are
# integers (HLEN, HDEL) in the usual case; HKEYS, whose reply the script must parse, only
# for a hash that keeps fields. Returns how many hashes held any of the view's fields.
_ERASE_LUA = """
local n = 0
for _, key in ipairs(KEYS) do
  local len = redis.call('HLEN', key)
  if len > 0 then
    local removed = 0
    for j = 1, #ARGV, 1000 do
      removed = removed + redis.call('HDEL', key, unpack(ARGV, j, math.min(j + 999, #ARGV)))
    end
    if removed > 0 then
      n = n + 1
      if removed < len then
        local shared = false
        for _, f in ipairs(redis.call('HKEYS', key)) do
          if string.sub(f, 1, 4) == '_ts:' then shared = true break end
        end
        if not shared then redis.call('DEL', key) end
      end
    end
  end
end
return n
"""


def _text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def _tail(typ: str, val: Any) -> bytes:
    type_id, fixed = _TAIL[typ]
    if typ == "string":
        raw = val.encode("utf-8")
        return fixed.pack(type_id, len(raw)) + raw
    return fixed.pack(type_id, fixed.size - 8, val)


@dataclass
class FeatureViewInfo:
    name: str
    fv: Any
    join_keys: list[str]
    raw_types: dict[str, str]
    join_key_types: dict[str, str]
    source: tuple[str, str] | None          # dataset identity of the batch source
    source_path: str | None
    field_mapping: dict[str, str]
    online: bool
    features: list[str] = field(default_factory=list)

    def source_column(self, join_key: str) -> str:
        inverse = {dst: src for src, dst in self.field_mapping.items()}
        return inverse.get(join_key, join_key)


class FeastRepo:
    def __init__(self, path: Path):
        import yaml

        self.path = path.resolve()
        cfg_file = self.path / "feature_store.yaml"
        if not cfg_file.is_file():
            raise ConfigError(f"[[feast]] repo {self.path} has no feature_store.yaml")
        raw = yaml.safe_load(cfg_file.read_text()) or {}
        self.raw_config = raw
        project = raw.get("project")
        if not project:
            raise ConfigError(f"{cfg_file}: no project")
        self.project: str = project
        online = raw.get("online_store", {"type": "sqlite"})
        self.online_type = online if isinstance(online, str) else online.get("type", "sqlite")
        self.namespace = f"feast://{self.project}"
        self._scripts: dict[str, Any] = {}
        self._builders: dict[tuple[str, str], Callable[[Sequence[Any]], list[bytes]]] = {}

    @cached_property
    def store(self):
        from feast import FeatureStore

        if self.online_type in ("sqlite", "redis"):
            return FeatureStore(repo_path=str(self.path))
        # an online store we do not erase from (and whose client may not be installed): load
        # the registry with a stand-in store, only to list the views and report them
        from feast.repo_config import RepoConfig

        raw = {**self.raw_config, "online_store": {"type": "sqlite", "path": ":memory:"}}
        reg = raw.get("registry", "data/registry.db")
        if isinstance(reg, str) and "://" not in reg and not Path(reg).is_absolute():
            raw["registry"] = str(self.path / reg)        # relative to the repo, not the cwd
        elif isinstance(reg, dict) and "path" in reg and not Path(reg["path"]).is_absolute():
            raw["registry"] = {**reg, "path": str(self.path / reg["path"])}
        return FeatureStore(config=RepoConfig(repo_path=self.path, **raw))

    @cached_property
    def _views(self) -> dict[str, FeatureViewInfo]:
        out = {}
        for fv in self.store.list_feature_views():
            entity_cols = {f.name: f for f in fv.entity_columns}
            jks = list(fv.join_keys) if hasattr(fv, "join_keys") else list(entity_cols)
            raw_types, types = {}, {}
            for jk in jks:
                f = entity_cols.get(jk)
                vt = f.dtype.to_value_type().name if f is not None else "UNKNOWN"
                raw_types[jk] = vt
                if vt in KEY_TYPES:
                    types[jk] = KEY_TYPES[vt]
            src = fv.batch_source
            path = getattr(src, "path", None)
            out[fv.name] = FeatureViewInfo(
                name=fv.name, fv=fv, join_keys=jks, raw_types=raw_types, join_key_types=types,
                source=self._dataset_of(path) if path else None, source_path=path,
                field_mapping=dict(getattr(src, "field_mapping", {}) or {}),
                online=bool(fv.online), features=[f.name for f in fv.features])
        return out

    def _dataset_of(self, path: str) -> tuple[str, str]:
        for scheme in ("s3://", "s3a://", "gs://", "abfss://"):
            if path.startswith(scheme):
                bucket, _, key = path[len(scheme):].partition("/")
                return (f"{scheme}{bucket}", key)
        p = Path(path[len("file://"):] if path.startswith("file://") else path)
        return ("file", str(p if p.is_absolute() else (self.path / p).resolve()))

    def views(self) -> list[FeatureViewInfo]:
        return list(self._views.values())

    def view(self, name: str) -> FeatureViewInfo:
        if name not in self._views:
            raise UnknownDatasetError(f"feature view {name!r} not found in {self.namespace}")
        return self._views[name]

    # ---- keys -------------------------------------------------------------------------
    def _value(self, jk_type: str, v: Any):
        from feast.protos.feast.types.Value_pb2 import Value

        return {"int64": lambda: Value(int64_val=v), "int32": lambda: Value(int32_val=v),
                "string": lambda: Value(string_val=v)}[jk_type]()

    def serialize(self, join_keys: list[str], values: list) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        return serialize_entity_key(
            EntityKey(join_keys=join_keys, entity_values=values),
            entity_key_serialization_version=self._key_version)

    @cached_property
    def _key_version(self) -> int:
        return self.store.config.entity_key_serialization_version

    def _key_builder(self, column: str, typ: str) -> Callable[[Sequence[Any]], list[bytes]]:
        """Single join key: values -> entity keys, byte for byte Feast's. Feast's
        `serialize_entity_key` builds two protobuf objects per key; its bytes are a head
        (the join key, the same for every key) and a tail (value type, length, value bytes),
        so a key is built as head + packed tail. Before it is used, the builder is checked
        against Feast's own function on sample values (signs, extremes, non-ASCII text);
        if one differs (another serialization version, say), or a value is not a plain
        int/str, Feast's function builds the key."""
        if (column, typ) in self._builders:
            return self._builders[(column, typ)]

        def slow(val: Any) -> bytes:
            return self.serialize([column], [self._value(typ, val)])

        kind = str if typ == "string" else int
        samples = _KEY_SAMPLES[typ]
        first = slow(samples[0])
        head = first[:len(first) - len(_tail(typ, samples[0]))]
        if all(slow(val) == head + _tail(typ, val) for val in samples):
            def build(values: Sequence[Any]) -> list[bytes]:
                return [head + _tail(typ, val) if type(val) is kind else slow(val)
                        for val in values]
        else:
            def build(values: Sequence[Any]) -> list[bytes]:
                return [slow(val) for val in values]
        self._builders[(column, typ)] = build
        return build

    def entity_keys(self, v: FeatureViewInfo, column: str, values: Sequence[Any]
                    ) -> dict[Any, list[bytes]]:
        """Online-store keys of each subject value. A single join key is built directly;
        a composite key needs the other join keys' values, found by scanning the store."""
        if len(v.join_keys) == 1:
            built = self._key_builder(column, v.join_key_types[column])(values)
            return {val: [k] for val, k in zip(values, built)}
        from feast.infra.key_encoding_utils import deserialize_entity_key

        wanted = {str(val): val for val in values}
        out: dict[Any, list[bytes]] = {val: [] for val in values}
        version = self._key_version
        for key in self._all_online_keys(v):
            ek = deserialize_entity_key(key, entity_key_serialization_version=version)
            for jk, val in zip(ek.join_keys, ek.entity_values):
                if jk == column:
                    got = getattr(val, val.WhichOneof("val")) if val.WhichOneof("val") else None
                    if str(got) in wanted:
                        out[wanted[str(got)]].append(key)
        return out

    # ---- online store ---------------------------------------------------------------------
    def _versioned(self, v: FeatureViewInfo) -> str:
        from feast.infra.online_stores.helpers import compute_versioned_name

        return compute_versioned_name(
            v.fv, self.store.config.registry.enable_online_feature_view_versioning)

    def _sqlite(self) -> tuple[sqlite3.Connection, str]:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        return sqlite3.connect(SqliteOnlineStore._get_db_path(self.store.config)), self.project

    def _table_id(self, v: FeatureViewInfo) -> str:
        from feast.infra.online_stores.helpers import compute_table_id

        return compute_table_id(self.project, v.fv,
                                self.store.config.registry.enable_online_feature_view_versioning)

    def _sqlite_table(self, v: FeatureViewInfo) -> str:
        tid = self._table_id(v)
        return '"' + tid.replace('"', '""') + '"'

    def _sqlite_view(self, v: FeatureViewInfo) -> tuple[sqlite3.Connection, str | None]:
        """A connection, and the view's quoted table name, or None when the view was never
        materialized (no table: nothing of it is online). Every other SQLite error (the
        database is locked, corrupt, unreadable) propagates: a store that cannot be read
        is never taken for one that holds nothing."""
        conn, _ = self._sqlite()
        try:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (self._table_id(v),)).fetchone()
        except BaseException:
            conn.close()
            raise
        return conn, (self._sqlite_table(v) if found else None)

    @cached_property
    def _redis(self):
        from feast.infra.online_stores.redis import RedisOnlineStore

        return RedisOnlineStore()._get_client(self.store.config.online_store)

    def _redis_key(self, key: bytes) -> bytes:
        return key + self.project.encode("utf-8")

    def _all_online_keys(self, v: FeatureViewInfo) -> list[bytes]:
        if self.online_type == "sqlite":
            conn, table = self._sqlite_view(v)
            try:
                return [] if table is None else [r[0] for r in conn.execute(
                    f"SELECT DISTINCT entity_key FROM {table}")]
            finally:
                conn.close()
        from feast.infra.online_stores.helpers import _redis_key_prefix

        suffix = self.project.encode("utf-8")
        pattern = _redis_key_prefix(v.join_keys) + b"*" + suffix
        return [k[: -len(suffix)] for k in self._redis.scan_iter(pattern, count=10_000)]

    def online_present(self, v: FeatureViewInfo, keys: dict[Any, list[bytes]]) -> set[bytes]:
        flat = [k for ks in keys.values() for k in ks]
        found: set[bytes] = set()
        if not flat or not v.online:
            return found
        if self.online_type == "sqlite":
            conn, table = self._sqlite_view(v)
            try:
                for i in range(0, len(flat) if table else 0, CHUNK):
                    chunk = flat[i:i + CHUNK]
                    q = (f"SELECT DISTINCT entity_key FROM {table} "
                         f"WHERE entity_key IN ({','.join('?' * len(chunk))})")
                    found.update(r[0] for r in conn.execute(q, chunk))
            finally:
                conn.close()
            return found
        fields = self._redis_fields(v)
        cut = -len(self.project.encode("utf-8"))
        for batch in self._redis_batches(flat):
            # one EXISTS over the whole batch: none of the hashes exists, so none holds the
            # view (the usual answer after an erase); else the script asks each hash
            if not self._redis.exists(*batch):
                continue
            flags = _text(self._redis_script(_PRESENT_LUA, batch, fields))
            if len(flags) != len(batch):
                raise RuntimeError("the Redis store check did not answer for every key")
            found.update(k[:cut] for k, hit in zip(batch, flags) if hit == "1")
        return found

    def delete_online(self, v: FeatureViewInfo, keys: list[bytes]) -> int:
        """Delete the view's rows of these entity keys; returns how many keys had any."""
        if not keys:
            return 0
        if self.online_type == "sqlite":
            conn, table = self._sqlite_view(v)
            try:
                if table is None:          # never materialized: nothing online to delete
                    return 0
                conn.execute("PRAGMA secure_delete = ON")   # zero the freed pages
                deleted = 0
                with conn:
                    for i in range(0, len(keys), CHUNK):
                        chunk = keys[i:i + CHUNK]
                        marks = ",".join("?" * len(chunk))
                        deleted += conn.execute(
                            f"SELECT count(DISTINCT entity_key) FROM {table} "
                            f"WHERE entity_key IN ({marks})", chunk).fetchone()[0]
                        conn.execute(f"DELETE FROM {table} WHERE entity_key IN ({marks})", chunk)
                return deleted
            finally:
                conn.close()
        fields = self._redis_fields(v)
        return sum(self._redis_script(_ERASE_LUA, ks, fields) for ks in self._redis_batches(keys))

    def _redis_fields(self, v: FeatureViewInfo) -> list[bytes]:
        """The view's fields in an entity's hash, as Feast writes them: `_ts:<view>` first,
        then the murmur3 hash of `<view>:<feature>` per feature (versioned view name)."""
        from feast.infra.online_stores.helpers import _mmh3

        name = self._versioned(v)
        return [f"_ts:{name}".encode()] + [_mmh3(f"{name}:{f}") for f in v.features]

    def _redis_batches(self, keys: list[bytes]) -> list[list[bytes]]:
        """The Redis keys (entity key + project) in script-sized batches; on a Redis
        Cluster, one batch per hash slot, since a script may only touch keys of one slot."""
        from redis.cluster import RedisCluster

        rkeys = [self._redis_key(k) for k in keys]
        groups = [rkeys]
        if isinstance(self._redis, RedisCluster):
            by_slot: dict[int, list[bytes]] = {}
            for k in rkeys:
                by_slot.setdefault(self._redis.keyslot(k), []).append(k)
            groups = list(by_slot.values())
        return [g[i:i + REDIS_BATCH] for g in groups for i in range(0, len(g), REDIS_BATCH)]

    def _redis_script(self, lua: str, keys: list[bytes], fields: list[bytes]) -> Any:
        script = self._scripts.get(lua)
        if script is None:
            script = self._scripts[lua] = self._redis.register_script(lua)
        return script(keys=keys, args=fields)

    # ---- what Feast itself would read and serve ------------------------------------------
    def offline_read(self, v: FeatureViewInfo, column: str, values: Sequence[Any]
                     ) -> tuple[dict[Any, int], list[str]]:
        """Rows of each value in the batch source as Feast's file offline store reads it:
        `dask.dataframe.read_parquet(path)`, i.e. every `*.parquet` file below the path, the
        Delta log ignored, `_` folders included. Also returns the Parquet files below the
        path that lack the key column: Dask reads those as data too and materialize fails
        (a Delta checkpoint under `_delta_log/` is one)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if v.source is None or v.source[0] != "file":
            return {}, []
        path = Path(v.source[1])
        if not path.exists():
            return {}, []
        col = v.source_column(column)
        counts: dict[Any, int] = {}
        not_data: list[str] = []
        for f in ([path] if path.is_file() else sorted(path.rglob("*.parquet"))):
            pf = pq.ParquetFile(f)
            if col not in pf.schema_arrow.names:
                not_data.append(str(f.relative_to(path)) if f != path else f.name)
                continue
            arr = comparable(pf.read(columns=[col]).column(0))
            try:
                vs = pa.array(list(values), type=arr.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                continue
            for key, n in key_counts(arr, vs).items():
                counts[key] = counts.get(key, 0) + n
        return counts, not_data

    def served(self, v: FeatureViewInfo, column: str, values: Sequence[Any]) -> dict[Any, bool]:
        """Does get_online_features still return any value for the entity? (single keys)"""
        if len(v.join_keys) != 1 or not v.online or not values:
            return {}
        refs = [f"{v.name}:{f}" for f in v.features]
        res = self.store.get_online_features(
            features=refs, entity_rows=[{column: val} for val in values]).to_dict()
        out = {}
        for i, val in enumerate(values):
            out[val] = any(res[f][i] is not None for f in v.features if f in res)
        return out

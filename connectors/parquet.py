"""Plain Parquet connector: a `.parquet` file, or a folder of them, without a Delta log.

This is what the `feast init` template and many exports use. Erasure rewrites each file that
holds a key without those rows, to a temporary file in the same folder, then renames it over
the original (atomic on POSIX), so a reader sees the old file or the new one, never half.
Parquet keeps no history, so nothing else needs purging; what the filesystem does with the
freed blocks is outside this connector (see docs/connectors/parquet.md).

On an object store (s3://, gs://, ...; a `.parquet` object or a prefix of them without a
`_delta_log/`) the prefix is listed and read through connectors/objectstore.py; a file is
rewritten by one PUT of the new object under the same key (atomic: a reader gets the old
object or the new one), and in a versioned bucket the old version is then deleted by its
version id, with any other noncurrent version holding a key.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from erasure.errors import UnknownDatasetError

from .base import (Capabilities, ConnectorPlugin, ConnectorRegistry, EraseResult, Presentation,
                   TargetCount)

if TYPE_CHECKING:
    from erasure.config import Config
from .keymatch import admitted_row_groups, array_of, comparable, key_counts, key_mask
from .objectstore import OBJECT_STORE_SCHEMES, Denied, ObjectPrefix, options_for


def _value_set(values: Sequence[Any], typ):
    return array_of(values, typ)


def _compression(pf) -> str:
    """Keep the file's codec (pyarrow's default would silently change it)."""
    if not pf.metadata.num_row_groups or not pf.metadata.num_columns:
        return "snappy"
    codec = pf.metadata.row_group(0).column(0).compression.lower()
    return "none" if codec == "uncompressed" else codec


class ParquetConnector:
    name = "parquet"
    capabilities = Capabilities(
        residue_scan=True, batch=True, guard="exact", erase_order=0,
        notes=("files are rewritten in place by atomic rename (on object stores: one PUT of the "
               "new object, then the old version is deleted in a versioned bucket); Parquet "
               "keeps no old versions",
               "no versions: a change since the plan trips the guard; re-plan and run again"))
    presentation = Presentation("Parquet file", "Parquet files", "files rewritten without the rows",
                                color="#4a8f5a", path_names=True)

    def __init__(self, storage: Sequence[Any] = (), default_options: dict | None = None):
        # `[[storage]]` entries and the default options (`[delta.storage_options]`)
        self.storage = tuple(storage)
        self.default_options = dict(default_options or {})
        self._stores: dict[str, tuple[ObjectPrefix, set[str] | None]] = {}

    def path(self, namespace: str, name: str) -> Path | None:
        if namespace != "file" or not name.startswith("/"):
            return None
        return Path(name)

    # ---- object stores ------------------------------------------------------------------
    @staticmethod
    def object_uri(namespace: str, name: str) -> str | None:
        if namespace.startswith(OBJECT_STORE_SCHEMES):
            return namespace.rstrip("/") + "/" + name.strip("/")
        return None

    def store(self, namespace: str, name: str) -> tuple[ObjectPrefix, set[str] | None] | None:
        """The dataset's prefix and, for a single `.parquet` object, its name in its parent
        prefix (the only object looked at); None for a local dataset."""
        uri = self.object_uri(namespace, name)
        if uri is None:
            return None
        if uri not in self._stores:
            opts = options_for(uri, self.storage, self.default_options)
            if uri.endswith(".parquet"):
                parent, _, fname = uri.rpartition("/")
                self._stores[uri] = (ObjectPrefix(parent, opts), {fname})
            else:
                self._stores[uri] = (ObjectPrefix(uri, opts), None)
        return self._stores[uri]

    def _objects(self, namespace: str, name: str):
        """(store, the current .parquet objects of the dataset), UnknownDatasetError if none."""
        found = self.store(namespace, name)
        assert found is not None
        store, only = found
        objs = [o for o in store.listing() if o.rel.endswith(".parquet")
                and (only is None or o.rel in only)]
        if not objs:
            raise UnknownDatasetError(f"no Parquet objects at {store.uri}")
        return store, objs

    def _scan(self, namespace: str, name: str, column: str, values: Sequence[Any]):
        from .delta.residue import scan_object_prefix

        found = self.store(namespace, name)
        assert found is not None
        store, only = found
        live = {o.rel for o in self._objects(namespace, name)[1]}
        return store, scan_object_prefix(store, live, {column}, list(values), only=only)

    def handles(self, namespace: str, name: str) -> bool:
        if self.object_uri(namespace, name) is not None:
            found = self.store(namespace, name)
            assert found is not None
            store, only = found
            try:
                rels = [o.rel for o in store.listing()]     # one listing for both questions
            except Exception:
                return False
            return (not any(r.startswith("_delta_log/") for r in rels)
                    and any(r.endswith(".parquet") and (only is None or r in only)
                            for r in rels))
        p = self.path(namespace, name)
        if p is None:
            return False
        if p.is_file():
            return p.suffix == ".parquet"
        return p.is_dir() and not (p / "_delta_log").exists() and any(self._files(p))

    @staticmethod
    def _files(p: Path) -> list[Path]:
        if p.is_file():
            return [p]
        # every Parquet file below, hidden and `_`-prefixed folders included: pyarrow skips
        # them but Dask (Feast's file offline store) reads them, so they can hold live data
        return sorted(p.rglob("*.parquet"))

    @staticmethod
    def stale_temps(p: Path) -> list[Path]:
        """Temporary copies an interrupted rewrite of ours left (`.<name>.erasure-*.tmp`):
        each is a full copy of a file that held the subject. The next run deletes them."""
        folder = p if p.is_dir() else p.parent
        if not folder.is_dir():
            return []
        if folder == p:
            return sorted(folder.rglob(".*.erasure-*.tmp"))
        return sorted(folder.glob(f".{p.name}.erasure-*.tmp"))

    def existing_path(self, namespace: str, name: str) -> Path:
        p = self.path(namespace, name)
        if p is None or not p.exists():
            raise UnknownDatasetError(f"no Parquet file or folder at {name}")
        return p

    def files(self, namespace: str, name: str) -> list[Path]:
        return self._files(self.existing_path(namespace, name))

    def _schema(self, namespace: str, name: str):
        import pyarrow.parquet as pq

        if self.store(namespace, name) is not None:
            store, objs = self._objects(namespace, name)
            f = store.open(objs[0])
            try:
                return pq.ParquetFile(f).schema_arrow
            finally:
                f.close()
        files = self.files(namespace, name)
        if not files:
            raise UnknownDatasetError(f"no Parquet files under {name}")
        return pq.read_schema(files[0])

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        schema = self._schema(namespace, name)
        if column not in schema.names:
            return None
        typ = schema.field(column).type
        return {"large_string": "string", "string_view": "string"}.get(str(typ), str(typ))

    def _hits(self, f: Path, column: str, values: Sequence[Any]) -> dict[Any, int]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(f)
        if column not in pf.schema_arrow.names:
            return {}
        try:
            groups, _ = admitted_row_groups(pf, column, sorted(values))
        except TypeError:           # values of mixed types: every row group is read
            groups = list(range(pf.metadata.num_row_groups))
        if not groups:              # the statistics rule every row group out
            return {}
        arr = comparable(pf.read_row_groups(groups, columns=[column]).column(0))
        return key_counts(arr, _value_set(values, arr.type))

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount:
        if self.store(namespace, name) is not None:
            _, sc = self._scan(namespace, name, column, values)
            return TargetCount(
                rows={v: sc.live_rows.get(v, 0) for v in values},
                files={v: sorted(sc.live.get(v, ())) for v in values}, version=None,
                residue={v: sorted(f"{f} ({k})" for f, k in sc.traces.get(v, {}).items())
                         for v in values},
                not_verified=list(sc.not_verified))
        root = self.existing_path(namespace, name)
        rows: dict[Any, int] = {v: 0 for v in values}
        files: dict[Any, list[str]] = {v: [] for v in values}
        for f in self.files(namespace, name):
            rel = f.name if root.is_file() else str(f.relative_to(root))
            for v, n in self._hits(f, column, values).items():
                rows[v] += n
                files[v].append(rel)
        stale = self.stale_temps(root)
        # a leftover temporary copy may hold any of the keys (it may be truncated: unread)
        residue = {v: [f"{t.relative_to(root if root.is_dir() else root.parent)} "
                       "(temporary copy left by an interrupted rewrite)" for t in stale]
                   for v in values}
        return TargetCount(rows=rows, files=files, version=None, residue=residue)

    def lookup(self, namespace: str, name: str, from_column: str, to_column: str,
               values: Sequence[Any]) -> tuple[dict[Any, list[Any]], int | None]:
        """`to_column` values per `from_column` value (LooksUp); Parquet has no versions."""
        import pyarrow.parquet as pq

        out: dict[Any, set[Any]] = {v: set() for v in values}
        for f in self._sources(namespace, name):
            tbl = pq.ParquetFile(f).read(columns=[from_column, to_column])
            col = comparable(tbl.column(0))
            hit = tbl.filter(key_mask(col, _value_set(values, col.type)))
            for k, v in zip(hit.column(0).to_pylist(), hit.column(1).to_pylist()):
                if v is not None and k in out:
                    out[k].add(v)
        return {k: sorted(v, key=str) for k, v in out.items()}, None

    def key_variants(self, namespace: str, name: str, column: str, rule: str,
                     values: Sequence[str]) -> dict[str, list[str]]:
        """The spellings of normalized identities in the files (FindsKeyVariants)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .keymatch import comparable, key_variants

        cols = [comparable(pq.ParquetFile(f).read(columns=[column]).column(0))
                for f in self._sources(namespace, name)]
        arr = pa.chunked_array([c for col in cols for c in col.chunks], pa.string()) if cols \
            else array_of([], pa.string())
        return key_variants(arr, rule, values)

    def _sources(self, namespace: str, name: str) -> list[Any]:
        """What pq.ParquetFile opens for each file: a path, or an object-store file."""
        if self.store(namespace, name) is None:
            return list(self.files(namespace, name))
        store, objs = self._objects(namespace, name)
        return [store.open(o) for o in objs]

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]:
        return self.count(namespace, name, column, values).rows

    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult:
        """Rewrite every file holding a key without those rows, atomically per file."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self.store(namespace, name) is not None:
            return self._erase_objects(namespace, name, column, values)
        deleted = rewritten = 0
        p = self.path(namespace, name)
        for t in self.stale_temps(p) if p is not None else []:
            t.unlink(missing_ok=True)   # our own copy from a killed run: never live data
        for f in self.files(namespace, name):
            if not self._hits(f, column, values):
                continue
            pf = pq.ParquetFile(f)
            table = pf.read()
            col = comparable(table.column(column))
            keep = pc.invert(key_mask(col, _value_set(values, col.type)))
            kept = table.filter(keep)
            tmp = f.with_name(f".{f.name}.erasure-{uuid.uuid4().hex[:8]}.tmp")
            try:
                pq.write_table(kept, tmp, compression=_compression(pf))
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, f)
            finally:
                if tmp.exists():
                    tmp.unlink()
            deleted += table.num_rows - kept.num_rows
            rewritten += 1
        return EraseResult(rows_deleted=deleted, version_before=None, version_after=None,
                           files_removed=rewritten, files_added=rewritten)

    def _erase_objects(self, namespace: str, name: str, column: str,
                       values: Sequence[Any]) -> EraseResult:
        """Rewrite each object holding a key: the new object is written under the same key
        by one PUT (atomic), then, in a versioned bucket, the old version is deleted by its
        id, and so is every other noncurrent version a scan finds holding a key."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from .objectstore import versions_unchecked_reason

        store, sc = self._scan(namespace, name, column, values)
        versioned = False
        if versions_unchecked_reason(store) is None:
            try:
                versioned = bool(store.versioning())
            except Denied:
                versioned = False     # verification reports the versions as not verified
        deleted = rewritten = 0
        by_rel = {o.rel: o for o in store.listing()}
        for rel in sorted({f for v in values for f in sc.live.get(v, ())}):
            old_version = store.current_version_id(rel) if versioned else None
            f = store.open(by_rel[rel])
            try:
                pf = pq.ParquetFile(f)
                table = pf.read()
                codec = _compression(pf)
            finally:
                f.close()
            col = comparable(table.column(column))
            kept = table.filter(pc.invert(key_mask(col, _value_set(values, col.type))))
            sink = pa.BufferOutputStream()
            pq.write_table(kept, sink, compression=codec)
            store.put(rel, sink.getvalue().to_pybytes())
            if old_version is not None:
                try:
                    store.delete_version(type(by_rel[rel])(rel, 0, 0.0, old_version))
                except Denied:
                    pass      # verification finds the old version and reports it
            deleted += table.num_rows - kept.num_rows
            rewritten += 1
        for ident, obj in sc.objects.items():
            if obj.version_id is not None:
                try:
                    store.delete_version(obj)
                except Denied:
                    pass
        return EraseResult(rows_deleted=deleted, version_before=None, version_after=None,
                           files_removed=rewritten, files_added=rewritten)

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        if self.object_uri(namespace, name) is not None:
            return {"mode": "rewrite", "remains": [], "until": None,
                    "note": (f"object store {self.object_uri(namespace, name)}: each object "
                             "holding the subject rewritten by one PUT under its key; in a "
                             "versioned bucket its old version and every noncurrent version "
                             "holding the subject deleted; every object and version checked")}
        return {"mode": "rewrite", "remains": [], "until": None,
                "note": "files rewritten without the rows and renamed over the originals"}


def _build(config: Config, registry: ConnectorRegistry) -> ParquetConnector:
    delta = config.section("delta")
    return ParquetConnector(config.storage,
                            delta.storage_options if delta is not None else None)


PLUGIN = ConnectorPlugin("parquet", ParquetConnector.presentation, _build, order=20)

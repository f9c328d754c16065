"""Plain Parquet connector: a `.parquet` file, or a folder of them, without a Delta log.

This is what the `feast init` template and many exports use. Erasure rewrites each file that
holds a key without those rows, to a temporary file in the same folder, then renames it over
the original (atomic on POSIX), so a reader sees the old file or the new one, never half.
Parquet keeps no history, so nothing else needs purging; what the filesystem does with the
freed blocks is outside this connector (see docs/connectors/parquet.md).
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
from .keymatch import array_of, comparable, key_counts, key_mask


def _value_set(values: Sequence[Any], typ):
    import pyarrow as pa

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
        notes=("files are rewritten in place by atomic rename; Parquet keeps no old versions",
               "no versions: a change since the plan trips the guard; re-plan and run again"))
    presentation = Presentation("Parquet file", "Parquet files", "files rewritten without the rows",
                                color="#4a8f5a", path_names=True)

    def path(self, namespace: str, name: str) -> Path | None:
        if namespace != "file" or not name.startswith("/"):
            return None
        return Path(name)

    def handles(self, namespace: str, name: str) -> bool:
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
        arr = comparable(pf.read(columns=[column]).column(0))
        return key_counts(arr, _value_set(values, arr.type))

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount:
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
        for f in self.files(namespace, name):
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
                for f in self.files(namespace, name)]
        arr = pa.chunked_array([c for col in cols for c in col.chunks], pa.string()) if cols \
            else array_of([], pa.string())
        return key_variants(arr, rule, values)

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]:
        return self.count(namespace, name, column, values).rows

    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult:
        """Rewrite every file holding a key without those rows, atomically per file."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

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

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        return {"mode": "rewrite", "remains": [], "until": None,
                "note": "files rewritten without the rows and renamed over the originals"}


def _build(config: Config, registry: ConnectorRegistry) -> ParquetConnector:
    return ParquetConnector()


PLUGIN = ConnectorPlugin("parquet", ParquetConnector.presentation, _build, order=20)

"""Feast connector: erase a subject's entity rows from feature stores, online and offline.

Feast has no API that deletes one entity. The connector finds the feature views whose batch
source is a dataset holding the subject (through the lineage trace), builds the entity keys
exactly as Feast does (the join key's declared type, the repo's serialization version,
every join key of a composite key), and deletes them from the online store: SQLite (rows,
with `secure_delete` so freed pages are zeroed; `value_text` copies go with the rows) or
Redis (the view's fields of the entity's hash, the hash itself when no other view shares it).

The offline source is erased by its own connector (Delta or Parquet) and always first:
Feast's file offline store reads Parquet files without the Delta log, so an unpurged old
file would let `feast materialize` restore the subject. Verification therefore asks
`get_online_features`, looks in the store, and reads the source files the way Feast does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from erasure.errors import UnknownDatasetError

from ..base import (Capabilities, ConnectorPlugin, ConnectorRegistry, EraseResult, Presentation,
                    TargetCount)
from .config import FeastRepoEntry
from .keys import KEY_TYPES, FeatureViewInfo, FeastRepo

if TYPE_CHECKING:
    from erasure.config import Config
    from erasure.lineage.graph import DatasetId, LineageGraph

SUPPORTED_ONLINE = ("sqlite", "redis")
CHUNK = 500


class FeastPresentation(Presentation):
    def plan_lines(self, t: dict[str, Any]) -> list[str]:
        """Online keys and offline rows; residue is said by the online/offline lines."""
        d = t.get("details", {})
        lines = [f"{d.get('online_store')} online keys present {t['rows']}; "
                 f"offline rows Feast reads {d.get('offline_rows_feast_reads')}"]
        for key in ("warning", "note"):
            if d.get(key):
                lines.append(f"{key}: {d[key]}")
        return lines

    def sweep_kinds(self, t: dict[str, Any]) -> list[str]:
        kinds = super().sweep_kinds(t)
        if t.get("details", {}).get("served_by_get_online_features"):
            kinds.append("served online")
        return kinds


class FeastConnector:
    name = "feast"
    capabilities = Capabilities(
        residue_scan=True, batch=True, guard="subject-keys", erase_order=10,
        notes=("runs after the offline sources are erased and purged, so a materialize "
               "cannot restore the subject",
               "online stores supported: sqlite, redis; others are reported unsupported"))
    presentation = FeastPresentation("Feast feature view", "Feast feature views",
                                     "online entity rows deleted", color="#b0702f")

    def __init__(self, repos: Sequence[Path]):
        self.repos = [FeastRepo(Path(r)) for r in repos]
        # per view target (repo namespace, view): what its source dataset's connector says
        # remains after erasure (`residue_after`: its mode), recorded when targets are
        # derived; the plan's note on materialize follows it (`source_note`)
        self._source_residue: dict[tuple[str, str], dict[str, Any]] = {}

    # ---- identity -------------------------------------------------------------------
    def repo_for(self, namespace: str) -> FeastRepo:
        for r in self.repos:
            if r.namespace == namespace:
                return r
        raise UnknownDatasetError(f"no configured Feast repo for {namespace}")

    def handles(self, namespace: str, name: str) -> bool:
        return any(r.namespace == namespace for r in self.repos)

    def view(self, namespace: str, name: str) -> FeatureViewInfo:
        return self.repo_for(namespace).view(name)

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        v = self.view(namespace, name)
        return v.join_key_types.get(column)

    # ---- lineage join -----------------------------------------------------------------
    def derive_targets(self, graph: LineageGraph, dataset_targets: list, unresolved: list[dict]):
        """Feature views fed by a dataset that holds the subject, with the join key that
        carries it; views that cannot be resolved; views left untouched (and why)."""
        from erasure.planning import ResolvedTarget

        keyed: dict[DatasetId, list[str]] = {}
        feeders: dict[DatasetId, Any] = {}
        for t in dataset_targets:
            keyed.setdefault(graph.canonical((t.namespace, t.name)), []).append(t.column)
            feeders.setdefault(graph.canonical((t.namespace, t.name)), t)
        unresolved_ids = {graph.canonical((u["namespace"], u["name"])) for u in unresolved}
        targets, more_unresolved, untouched = [], [], []
        for repo in self.repos:
            try:
                views = repo.views()
            except Exception as exc:   # a repo we cannot load is named, never skipped
                more_unresolved.append({"namespace": repo.namespace, "name": "*", "reason": (
                    f"cannot load the Feast repo {repo.path}: {type(exc).__name__}: "
                    f"{str(exc)[:300]}")})
                continue
            for v in views:
                src = graph.canonical(v.source) if v.source else None
                ident = {"namespace": repo.namespace, "name": v.name}
                if src in keyed:
                    cols = keyed[src]
                    jks = [jk for jk in v.join_keys if v.source_column(jk) in cols]
                    if not jks:
                        more_unresolved.append({**ident, "reason": (
                            f"feature view reads {src[1]}, which holds the subject key "
                            f"{', '.join(cols)}, but none of its join keys "
                            f"{', '.join(v.join_keys)} maps to it")})
                        continue
                    if repo.online_type not in SUPPORTED_ONLINE and v.online:
                        more_unresolved.append({**ident, "reason": (
                            f"online store type {repo.online_type!r} is not supported "
                            f"(supported: {', '.join(SUPPORTED_ONLINE)}); erase it by hand")})
                        continue
                    self._source_residue[(repo.namespace, v.name)] = _residue_of(feeders[src])
                    for jk in jks:
                        typ = v.join_key_types.get(jk)
                        if typ is None:
                            more_unresolved.append({**ident, "reason": (
                                f"join key {jk} has value type {v.raw_types.get(jk)}, which "
                                f"cannot be matched exactly (supported: {', '.join(KEY_TYPES)})")})
                            continue
                        targets.append(ResolvedTarget(
                            repo.namespace, v.name, self, jk, typ, "feature_view",
                            {"namespace": src[0], "name": src[1], "column": v.source_column(jk),
                             "job": None}))
                elif src in unresolved_ids:
                    more_unresolved.append({**ident, "reason": (
                        f"feature view reads {src[1]}, which is downstream of the subject "
                        "but unresolved")})
                else:
                    untouched.append({**ident, "reason": (
                        "batch source is not downstream of the roots"
                        if src else "feature view has no file batch source")})
        return targets, more_unresolved, untouched

    # ---- measuring ------------------------------------------------------------------
    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount:
        repo = self.repo_for(namespace)
        v = repo.view(name)
        keys = repo.entity_keys(v, column, values)
        present = repo.online_present(v, keys)
        rows = dict.fromkeys(values, 0)
        if present:
            rows.update((val, sum(k in present for k in ks)) for val, ks in keys.items())
        residue: dict[Any, list[str]] = {val: [] for val in values}
        offline, not_data = repo.offline_read(v, column, values) if with_residue else ({}, [])
        served = repo.served(v, column, values) if with_residue else {}
        said: dict[str, Any] = {}       # what the plan says of every value alike
        if v.source and v.source[0] == "file" and (Path(v.source[1]) / "_delta_log").is_dir():
            said["note"] = source_note(self._source_residue.get((namespace, name)))
        if not_data:
            said["warning"] = (
                "Feast's file offline store (Dask read_parquet) reads every *.parquet file "
                "under the source, and these are not data (a Delta checkpoint, say): "
                "`feast materialize` over this view fails until the source is read "
                "through its Delta log")
        store = repo.online_type
        details = {val: {"online_store": store, "online_keys": rows[val],
                         "offline_rows_feast_reads": offline.get(val, 0),
                         "served_by_get_online_features": served.get(val), **said}
                   for val in values}
        if not_data:
            for d in details.values():
                d["feast_reader_breaks_on"] = not_data[:5]
        for val in served:
            if served[val]:
                residue[val].append("online: get_online_features still serves the entity")
        for val, n in offline.items():
            if n and val in residue:
                residue[val].append(f"offline: {n} rows in the source files Feast reads "
                                    "(a materialize would restore them)")
        return TargetCount(rows=rows, files={val: [] for val in values}, version=None,
                           residue=residue, details=details)

    def rows_readers_see(self, namespace: str, name: str, column: str,
                         values: Sequence[Any]) -> dict[Any, int]:
        """Online keys plus the offline rows Feast reads (connectors.base.ReaderView)."""
        counted = self.count(namespace, name, column, values)
        return {v: counted.rows.get(v, 0)
                + (counted.details.get(v, {}).get("offline_rows_feast_reads") or 0)
                for v in values}

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]:
        return self.count(namespace, name, column, values, with_residue=False).rows

    # ---- erasing --------------------------------------------------------------------
    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult:
        repo = self.repo_for(namespace)
        v = repo.view(name)
        keys = repo.entity_keys(v, column, values)
        deleted = repo.delete_online(v, [k for ks in keys.values() for k in ks])
        return EraseResult(rows_deleted=deleted, version_before=None, version_after=None,
                           files_removed=0, files_added=0)

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        repo = self.repo_for(namespace)
        note = {"sqlite": "rows deleted with secure_delete (freed pages zeroed)",
                "redis": ("fields deleted from the entity's hash; Redis persistence files "
                          "(RDB/AOF) keep old values until they are rewritten")}.get(
            repo.online_type, "unsupported online store")
        return {"mode": "delete", "remains": [], "until": None, "note": note}


def _residue_of(target: Any) -> dict[str, Any]:
    """What the source dataset's connector says remains after erasure, in its configured
    mode (`residue_after`); empty when it cannot say."""
    try:
        out = target.connector.residue_after(target.namespace, target.name)
    except Exception:      # a source it cannot open now: the note stays generic
        return {}
    return out if isinstance(out, dict) else {}


def source_note(residue: dict[str, Any] | None) -> str:
    """The plan's note on `feast materialize` for a view whose source is a Delta folder,
    by the residue mode the source is erased in. Feast's file offline store reads every
    *.parquet below the folder as data, a log checkpoint included: a mode that writes a
    checkpoint (purge) breaks materialize for the view; modes that write none
    (rewrite-history, keep-history) do not."""
    mode = (residue or {}).get("mode")
    if mode == "purge":
        return ("Delta source erased in purge mode: the purge ends with a log checkpoint, a "
                "Parquet file that Feast's file offline store reads as data, so `feast "
                "materialize` of this view fails after the erasure (it cannot restore the "
                "subject, but the feature pipeline stops). [delta] residue = "
                "\"rewrite-history\" writes no checkpoint and keeps materialize working "
                "(keep-history writes none either, but fails this view's verification); see "
                "docs/connectors/feast.md")
    if mode == "rewrite-history":
        return ("Delta source erased in rewrite-history mode: the subject's rows leave every "
                "file Feast reads and no checkpoint is written, so `feast materialize` of "
                "this view keeps working and cannot restore the subject (purge mode would "
                "break it with its checkpoint)")
    if mode == "keep-history":
        refused = (residue or {}).get("rewrite_refused")
        return (("rewrite-history cannot be applied to the Delta source, which is left as "
                 "keep-history leaves it: " if refused else
                 "Delta source erased in keep-history mode: ")
                + "no checkpoint is written, so `feast materialize` keeps running, but the "
                "old files Feast reads keep the subject's rows and a materialize would "
                "restore them; this view fails verification (use rewrite-history, or purge, "
                "which breaks materialize with its checkpoint)")
    return ("Delta source: a purge ends with a log checkpoint, a Parquet file that Feast's "
            "file offline store reads as data, so later materializations of this view fail "
            "(they cannot restore the subject); rewrite-history writes no checkpoint; see "
            "docs/connectors/feast.md")


def _build(config: Config, registry: ConnectorRegistry) -> FeastConnector | None:
    entries = config.section("feast") or []
    if not entries:
        return None
    from .. import extras

    extras.require(extras.FEAST)
    from erasure.config import resolve_path

    return FeastConnector([resolve_path(config.base_dir, e.repo) for e in entries])


PLUGIN = ConnectorPlugin("feast", FeastConnector.presentation, _build, section="feast",
                         model=list[FeastRepoEntry], default=list, order=30)

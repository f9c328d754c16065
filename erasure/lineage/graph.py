"""The lineage graph (networkx) and the tracing of a subject key column through it.

Nodes are ("dataset", namespace, name) and ("job", namespace, name); edges run
input dataset -> job -> output dataset. Aliases joined by `symlinks` facets are merged
into one node, named by a physical identity (file, s3://...) where one exists.

Each dataset node also keeps its descriptive facets (tags, ownership, documentation, ...: every
facet but schema, columnLineage and symlinks) for policies: per facet name, the one of the
latest event that carried it (by eventTime; an event without one counts as the oldest), over
the dataset and its aliases; a facet sent as `{"_deleted": true}` is dropped, as OpenLineage
says.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from .events import AGGREGATION, IDENTITY, INDIRECT, LineageEvent

DatasetId = tuple[str, str]          # (namespace, name)
PHYSICAL_PREFIXES = ("file", "s3://", "s3a://", "gs://", "abfss://", "az://", "hdfs://")


def _is_physical(ds: DatasetId) -> bool:
    return ds[0] == "file" or ds[0].startswith(PHYSICAL_PREFIXES[1:])


class LineageGraph:
    def __init__(self, events: Iterable[LineageEvent]):
        import networkx as nx

        self.g = nx.DiGraph()
        events = list(events)
        parent: dict[DatasetId, DatasetId] = {}

        def find(x: DatasetId) -> DatasetId:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def union(a: DatasetId, b: DatasetId) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                # the physical identity (or the smaller name) represents the group
                pick = sorted([ra, rb], key=lambda d: (not _is_physical(d), d))
                parent[pick[1]] = pick[0]

        for ev in events:
            for d in ev.inputs + ev.outputs:
                find((d.namespace, d.name))
                for s in d.symlinks:
                    union((d.namespace, d.name), s)
        self.alias = {a: find(a) for a in list(parent)}

        for ev in events:
            job = ("job",) + ev.job if ev.job else None
            if job:
                self.g.add_node(job, kind="job")
            for side, refs in (("in", ev.inputs), ("out", ev.outputs)):
                for d in refs:
                    node = self.node(d.namespace, d.name)
                    data = self._ensure(node)
                    data["fields"].update(d.fields)
                    if d.has_column_lineage:
                        data["has_column_lineage"] = True
                    for col, srcs in d.column_lineage:
                        bucket = data["column_lineage"].setdefault(col, set())
                        for src in srcs:
                            bucket.add((self.canonical((src.namespace, src.name)), src.field,
                                        src.kind))
                    if job:
                        if side == "in":
                            self.g.add_edge(node, job)
                        else:
                            self.g.add_edge(job, node)

        # facets in event-time order (the store gives events in key order), later ones win;
        # sorted() is stable, so events of the same time keep the order they were given in
        carriers = [ev for ev in events if any(d.facets for d in ev.inputs + ev.outputs)]
        for ev in sorted(carriers, key=lambda e: e.event_time or ""):
            for d in ev.inputs + ev.outputs:
                if not d.facets:
                    continue
                kept = self.g.nodes[self.node(d.namespace, d.name)]["facets"]
                for name, value in d.facet_objects().items():
                    if value.get("_deleted") is True:
                        kept.pop(name, None)
                    else:
                        kept[name] = value

    def _ensure(self, node: tuple) -> dict:
        if node not in self.g:
            self.g.add_node(node, kind="dataset", fields=set(), column_lineage={},
                            has_column_lineage=False, facets={})
        return self.g.nodes[node]

    def canonical(self, ds: DatasetId) -> DatasetId:
        return self.alias.get(ds, ds)

    def node(self, namespace: str, name: str) -> tuple:
        return ("dataset",) + self.canonical((namespace, name))

    def datasets(self) -> list[DatasetId]:
        return sorted(n[1:] for n, d in self.g.nodes(data=True) if d["kind"] == "dataset")

    def jobs(self) -> list[DatasetId]:
        return sorted(n[1:] for n, d in self.g.nodes(data=True) if d["kind"] == "job")

    def aliases_of(self, ds: DatasetId) -> list[DatasetId]:
        c = self.canonical(ds)
        return sorted(a for a, r in self.alias.items() if r == c and a != c)

    def downstream(self, ds: DatasetId) -> list[tuple[DatasetId, DatasetId]]:
        """(job, output dataset) pairs one hop downstream of a dataset."""
        node = self.node(*ds)
        if node not in self.g:
            return []
        out = []
        for job in self.g.successors(node):
            for o in self.g.successors(job):
                out.append((job[1:], o[1:]))
        return sorted(set(out))

    def info(self, ds: DatasetId) -> dict:
        """The dataset's node data: `fields` (set), `column_lineage`, `has_column_lineage`
        and `facets` (name -> the facet object; {} when none)."""
        node = self.node(*ds)
        return self.g.nodes[node] if node in self.g else {
            "fields": set(), "column_lineage": {}, "has_column_lineage": False, "facets": {}}


@dataclass
class KeyedDataset:
    dataset: DatasetId
    column: str
    how: str                       # root | column_lineage | name_match | override
    via: tuple[DatasetId, str] | None = None
    job: DatasetId | None = None
    needs_schema_check: bool = False
    identity: str = ""             # the identity type of the root it was traced from


@dataclass
class Trace:
    keyed: list[KeyedDataset] = field(default_factory=list)
    out_of_scope: dict[DatasetId, str] = field(default_factory=dict)
    unresolved: dict[DatasetId, str] = field(default_factory=dict)


def trace_subject_keys(graph: LineageGraph,
                       roots: list[tuple[DatasetId, str]] | list[tuple[DatasetId, str, str]],
                       overrides: dict[DatasetId, tuple[str | None, str | None]] | None = None
                       ) -> Trace:
    """Follow each root's key column downstream through renames.

    A downstream column is a subject key only when column lineage says it is an IDENTITY
    copy of a key column, or when the dataset has no column lineage and a column of the
    same name exists (said so in `how`). Aggregations of the key are out of scope; any
    other dataset the subject's rows reach is listed as unresolved with the reason.
    `overrides` maps a dataset to (column, exclude-reason) as an operator declared it.
    """
    overrides = overrides or {}
    trace = Trace()
    seen: set[tuple[DatasetId, str]] = set()
    queue: deque[KeyedDataset] = deque()
    for ds, col, *typ in roots:
        # each root's key column holds an identity type (its column's name by default); every
        # dataset traced from it holds the same type
        queue.append(KeyedDataset(graph.canonical(ds), col, "root",
                                  identity=typ[0] if typ else col))

    while queue:
        k = queue.popleft()
        if (k.dataset, k.column) in seen:
            continue
        seen.add((k.dataset, k.column))
        trace.keyed.append(k)
        trace.unresolved.pop(k.dataset, None)
        for job, out in graph.downstream(k.dataset):
            if out in overrides:
                override_col, exclude = overrides[out]
                if exclude:
                    trace.out_of_scope[out] = f"excluded by configuration: {exclude}"
                elif override_col:
                    queue.append(KeyedDataset(out, override_col, "override", (k.dataset, k.column),
                                              job, identity=k.identity))
                continue
            info = graph.info(out)
            hits: dict[str, set[str]] = {}
            for out_col, srcs in info["column_lineage"].items():
                for (src_ds, src_field, kind) in srcs:
                    if src_ds == k.dataset and src_field == k.column:
                        hits.setdefault(kind, set()).add(out_col)
            keyed_here = any(x.dataset == out for x in trace.keyed) or any(
                x.dataset == out for x in queue)
            if IDENTITY in hits:
                for out_col in sorted(hits[IDENTITY]):
                    queue.append(KeyedDataset(out, out_col, "column_lineage",
                                              (k.dataset, k.column), job, identity=k.identity))
                continue
            if keyed_here:
                continue
            if AGGREGATION in hits:
                trace.out_of_scope.setdefault(out, (
                    f"column(s) {', '.join(sorted(hits[AGGREGATION]))} aggregate the subject key "
                    f"{k.column} of {k.dataset[1]} (AGGREGATION): no per-subject key to erase by"))
                continue
            other = {kind: cols for kind, cols in hits.items() if kind != INDIRECT}
            if other:
                desc = "; ".join(f"{', '.join(sorted(c))} ({kind})" for kind, c in sorted(other.items()))
                trace.unresolved.setdefault(out, (
                    f"column lineage derives {desc} from the subject key {k.column} of "
                    f"{k.dataset[1]} without an IDENTITY copy: values cannot be matched to the "
                    "subject id"))
                continue
            if info["has_column_lineage"]:
                trace.unresolved.setdefault(out, (
                    f"reads {k.dataset[1]} (job {job[1]}) but its column lineage carries no copy "
                    f"of the subject key {k.column}"))
                continue
            # no column lineage: a same-name column is used if it exists (checked against the
            # events' schema here, else against the table's own schema at plan time)
            if k.column in info["fields"]:
                queue.append(KeyedDataset(out, k.column, "name_match", (k.dataset, k.column), job,
                                          identity=k.identity))
            else:
                queue.append(KeyedDataset(out, k.column, "name_match", (k.dataset, k.column), job,
                                          needs_schema_check=True, identity=k.identity))
    # a dataset reached by one path as keyed is not also unresolved or out of scope
    keyed = {x.dataset for x in trace.keyed}
    for ds in list(trace.unresolved):
        if ds in keyed:
            del trace.unresolved[ds]
    for ds in list(trace.out_of_scope):
        if ds in keyed:
            del trace.out_of_scope[ds]
    return trace

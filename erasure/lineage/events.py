"""Parse and validate OpenLineage events read as plain dicts.

The OpenLineage client has no JSON-to-object parser, so validation is ours. An event is
accepted whole or refused whole: a refused event contributes nothing to the graph.

Strict mode (the default) checks what the OpenLineage spec requires of each event kind.
Lenient mode accepts partial events (as the Spark integration's test templates are) and
keeps what the graph needs: the job's namespace and each dataset's namespace and name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, NoReturn, overload

from ..errors import MalformedEventError

RUN_EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}

# Dataset facets about structure, read into DatasetRef's own fields (schema -> fields,
# symlinks, columnLineage); every other facet (tags, ownership, documentation, dataSource,
# lifecycleStateChange, ...) is kept as the event carries it, for policies (erasure/policy.py).
STRUCTURE_FACETS = frozenset({"schema", "columnLineage", "symlinks"})

# How an output column derives from an input column, reduced to what key tracing needs.
IDENTITY, AGGREGATION, MASKED, TRANSFORMATION, INDIRECT, UNDECLARED = (
    "identity", "aggregation", "masked", "transformation", "indirect", "undeclared")


@dataclass(frozen=True)
class ColumnSource:
    namespace: str
    name: str
    field: str
    kind: str


@dataclass(frozen=True)
class DatasetRef:
    namespace: str
    name: str
    fields: tuple[str, ...] = ()
    symlinks: tuple[tuple[str, str], ...] = ()
    column_lineage: tuple[tuple[str, tuple[ColumnSource, ...]], ...] = ()
    has_column_lineage: bool = False
    # the other dataset facets: (facet name, its canonical JSON text), sorted by name; text, so
    # the ref stays immutable and hashable
    facets: tuple[tuple[str, str], ...] = ()

    def facet_objects(self) -> dict[str, Any]:
        """The kept facets by name, as the event carried them (`facets`, parsed)."""
        return {name: json.loads(text) for name, text in self.facets}


@dataclass(frozen=True)
class LineageEvent:
    kind: str                      # "run", "job" or "dataset"
    event_type: str | None
    event_time: str | None
    job: tuple[str, str] | None
    run_id: str | None
    inputs: tuple[DatasetRef, ...] = ()
    outputs: tuple[DatasetRef, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        def ds(d: DatasetRef) -> dict[str, Any]:
            out = {"namespace": d.namespace, "name": d.name, "fields": list(d.fields),
                   "symlinks": [list(s) for s in d.symlinks],
                   "has_column_lineage": d.has_column_lineage,
                   "column_lineage": {col: [[s.namespace, s.name, s.field, s.kind] for s in srcs]
                                      for col, srcs in d.column_lineage}}
            if d.facets:
                # only when there are some: an event without such facets keeps the JSON (and
                # so the store key) it had before facets were kept
                out["facets"] = d.facet_objects()
            return out
        return {"kind": self.kind, "event_type": self.event_type, "event_time": self.event_time,
                "job": list(self.job) if self.job else None, "run_id": self.run_id,
                "inputs": [ds(d) for d in self.inputs], "outputs": [ds(d) for d in self.outputs]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LineageEvent":
        def ds(x: dict[str, Any]) -> DatasetRef:
            cl = tuple((col, tuple(ColumnSource(*s) for s in srcs))
                       for col, srcs in x["column_lineage"].items())
            return DatasetRef(x["namespace"], x["name"], tuple(x["fields"]),
                              tuple(tuple(s) for s in x["symlinks"]), cl,
                              x["has_column_lineage"], _kept_facets(x.get("facets") or {}))
        return cls(d["kind"], d["event_type"], d["event_time"],
                   tuple(d["job"]) if d["job"] else None, d["run_id"],
                   tuple(ds(x) for x in d["inputs"]), tuple(ds(x) for x in d["outputs"]))


@dataclass(frozen=True)
class Rejected:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"



def _event_bytes(obj: Any) -> bytes:
    """The event's canonical JSON (RFC 8785), what names a job without a name: the same
    event always gets the same name, in any language. An event that has no canonical form (a
    number beyond 2**53, a lone surrogate) is refused as malformed."""
    from ..canonical import NotCanonicalJSON, canonical_bytes

    try:
        return canonical_bytes(obj)
    except NotCanonicalJSON as exc:
        _fail(f"has no job name and cannot be named by its content: {exc}")

def _fail(msg: str) -> NoReturn:
    raise MalformedEventError(msg)


def _kept_facets(facets: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The facets a DatasetRef keeps: every facet but the structural ones, each a JSON object
    with a canonical form. Anything else is left out, not refused: events accepted before
    facets were kept are accepted the same way now."""
    from ..canonical import NotCanonicalJSON, canonical_text

    kept = []
    for name, value in facets.items():
        if name in STRUCTURE_FACETS or not isinstance(value, dict):
            continue
        try:
            kept.append((name, canonical_text(value)))
        except NotCanonicalJSON:
            continue
    return tuple(sorted(kept))


@overload
def _str(obj: dict, key: str, where: str, required: Literal[True] = True) -> str: ...
@overload
def _str(obj: dict, key: str, where: str, required: bool) -> str | None: ...
def _str(obj: dict, key: str, where: str, required: bool = True) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            _fail(f"missing {where}.{key}")
        return None
    if not isinstance(v, str) or not v:
        _fail(f"{where}.{key} must be a non-empty string")
    return v


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_event_time(value: str) -> str:
    """ISO 8601 with any fraction length; no zone means UTC. Returns a normalized UTC string."""
    text = _FRACTION.sub(r"\1", value.strip().replace("Z", "+00:00"))
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"eventTime {value!r} is not an ISO 8601 timestamp")
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat()


def _transform_kind(input_field: dict, legacy: str | None) -> str:
    transforms = input_field.get("transformations")
    if isinstance(transforms, list) and transforms:
        kinds = set()
        for t in transforms:
            if not isinstance(t, dict):
                _fail("columnLineage transformations must be objects")
            ttype = str(t.get("type", "")).upper()
            sub = str(t.get("subtype", "")).upper()
            if ttype == "INDIRECT":
                kinds.add(INDIRECT)
            elif t.get("masking") is True:
                kinds.add(MASKED)
            elif sub == "IDENTITY":
                kinds.add(IDENTITY)
            elif sub == "AGGREGATION":
                kinds.add(AGGREGATION)
            else:
                kinds.add(TRANSFORMATION)
        for k in (IDENTITY, MASKED, AGGREGATION, TRANSFORMATION, INDIRECT):
            if k in kinds:
                return k
    if legacy:
        legacy = legacy.upper()
        return {"IDENTITY": IDENTITY, "MASKED": MASKED, "AGGREGATION": AGGREGATION}.get(
            legacy, TRANSFORMATION)
    return UNDECLARED


def _dataset(d: Any, where: str, lenient: bool) -> DatasetRef | None:
    if not isinstance(d, dict):
        _fail(f"{where} must be an object")
    if lenient and (not isinstance(d.get("namespace"), str) or not isinstance(d.get("name"), str)):
        return None
    ns = _str(d, "namespace", where)
    name = _str(d, "name", where)
    facets = d.get("facets") or {}
    if not isinstance(facets, dict):
        _fail(f"{where}.facets must be an object")
    fields: list[str] = []
    schema = facets.get("schema")
    if isinstance(schema, dict) and isinstance(schema.get("fields"), list):
        for f in schema["fields"]:
            if isinstance(f, dict) and isinstance(f.get("name"), str):
                fields.append(f["name"])
    symlinks = []
    sl = facets.get("symlinks")
    if isinstance(sl, dict):
        ids = sl.get("identifiers", [])
        if not isinstance(ids, list):
            _fail(f"{where}.facets.symlinks.identifiers must be a list")
        for s in ids:
            if isinstance(s, dict) and isinstance(s.get("namespace"), str) and isinstance(s.get("name"), str):
                symlinks.append((s["namespace"], s["name"]))
            elif not lenient:
                _fail(f"{where}.facets.symlinks.identifiers entries need namespace and name")
    lineage: list[tuple[str, tuple[ColumnSource, ...]]] = []
    cl = facets.get("columnLineage")
    has_cl = False
    if cl is not None:
        if not isinstance(cl, dict):
            _fail(f"{where}.facets.columnLineage must be an object")
        cols = cl.get("fields", {})
        if not isinstance(cols, dict):
            _fail(f"{where}.facets.columnLineage.fields must be an object")
        has_cl = bool(cols)
        for col, spec in cols.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("inputFields", []), list):
                _fail(f"{where}.facets.columnLineage.fields[{col!r}] needs a list inputFields")
            legacy = spec.get("transformationType")
            srcs = []
            for inf in spec.get("inputFields", []):
                if not (isinstance(inf, dict) and all(isinstance(inf.get(k), str)
                                                      for k in ("namespace", "name", "field"))):
                    _fail(f"{where}.facets.columnLineage.fields[{col!r}].inputFields entries "
                          "need namespace, name and field")
                srcs.append(ColumnSource(inf["namespace"], inf["name"], inf["field"],
                                         _transform_kind(inf, legacy)))
            lineage.append((col, tuple(srcs)))
    return DatasetRef(ns, name, tuple(fields), tuple(symlinks), tuple(lineage), has_cl,
                      _kept_facets(facets))


def validate_event(obj: Any, lenient: bool = False) -> LineageEvent:
    """Return the event's lineage content, or raise MalformedEventError saying what is wrong."""
    if not isinstance(obj, dict):
        _fail("an event must be a JSON object")
    warnings: list[str] = []
    if "run" in obj:
        kind = "run"
    elif "dataset" in obj:
        kind = "dataset"
    elif "job" in obj:
        kind = "job"
    elif lenient and ("inputs" in obj or "outputs" in obj):
        kind = "job"       # a partial event: keep its datasets under a job of its own
        obj = {**obj, "job": {"namespace": "<unknown>"}}
    else:
        _fail("not an OpenLineage event: none of run, job or dataset is present")

    def need(key: str, check) -> Any:
        try:
            return check()
        except MalformedEventError as exc:
            if not lenient:
                raise
            warnings.append(f"{exc} (accepted in lenient mode)")
            return None

    event_time = need("eventTime", lambda: parse_event_time(_str(obj, "eventTime", "event")))
    need("producer", lambda: _str(obj, "producer", "event"))
    event_type = obj.get("eventType")
    if kind == "run" and event_type is not None and (
            not isinstance(event_type, str) or event_type.upper() not in RUN_EVENT_TYPES):
        _fail(f"eventType {event_type!r} is not one of {sorted(RUN_EVENT_TYPES)}")

    if kind == "dataset":
        ds = _dataset(obj["dataset"], "dataset", lenient)
        if ds is None:
            _fail("dataset needs namespace and name")
        return LineageEvent("dataset", None, event_time, None, None, (), (ds,), tuple(warnings))

    run_id = None
    if kind == "run":
        run = obj.get("run")
        if not isinstance(run, dict):
            _fail("run must be an object")
        run_id = need("runId", lambda: _str(run, "runId", "run"))
    job = obj.get("job")
    if not isinstance(job, dict):
        _fail("missing job object")
    jns = _str(job, "namespace", "job")
    jname = need("job.name", lambda: _str(job, "name", "job"))
    if jname is None:
        # without a name or run id nothing ties this event to another one: a job of its own,
        # so unrelated partial events never share a node (and a false lineage edge)
        ident = run_id or hashlib.sha256(_event_bytes(obj)).hexdigest()[:12]
        jname = f"<unnamed job; {'run ' if run_id else 'event '}{ident}>"
    sides = []
    for side in ("inputs", "outputs"):
        items = obj.get(side, [])
        if items is None:
            items = []
        if not isinstance(items, list):
            _fail(f"{side} must be a list")
        refs = []
        for i, d in enumerate(items):
            ref = _dataset(d, f"{side}[{i}]", lenient)
            if ref is None:
                warnings.append(f"{side}[{i}] has no namespace or name; ignored (lenient mode)")
            else:
                refs.append(ref)
        sides.append(tuple(refs))
    return LineageEvent(kind, event_type.upper() if isinstance(event_type, str) else None,
                        event_time, (jns, jname), run_id, sides[0], sides[1], tuple(warnings))


def read_event_file(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed JSON or a JSONDecodeError) for each event in a file.

    Accepts JSON Lines, a JSON array of events, or one pretty-printed JSON object.
    For an array the "line" is where the event's object starts.
    """
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            yield exc.lineno, exc
            return
        # line of each array element: decode incrementally to know where each object starts
        decoder = json.JSONDecoder()
        pos = text.index("[") + 1
        for item in items:
            while text[pos] in " \t\r\n,":
                pos += 1
            _, end = decoder.raw_decode(text, pos)
            yield text.count("\n", 0, pos) + 1, item
            pos = end
        return
    if stripped.startswith("{") and "\n" in stripped.rstrip():
        try:
            yield text[: len(text) - len(stripped)].count("\n") + 1, json.loads(text)
            return
        except json.JSONDecodeError:
            pass  # several objects: JSON Lines
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, exc


def parse_file(path: Path, lenient: bool = False) -> tuple[list[LineageEvent], list[Rejected], list[str]]:
    """All events of a file, the rejected ones with file and line, and lenient-mode warnings."""
    events: list[LineageEvent] = []
    rejected: list[Rejected] = []
    warnings: list[str] = []
    for lineno, item in read_event_file(path):
        if isinstance(item, json.JSONDecodeError):
            rejected.append(Rejected(str(path), lineno, f"invalid JSON: {item.msg}"))
            continue
        try:
            ev = validate_event(item, lenient)
        except MalformedEventError as exc:
            rejected.append(Rejected(str(path), lineno, str(exc)))
            continue
        events.append(ev)
        warnings.extend(f"{path}:{lineno}: {w}" for w in ev.warnings)
    return events, rejected, warnings

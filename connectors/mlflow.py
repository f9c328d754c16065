"""MLflow connector: find the registered model versions that learned from a subject's data,
and flag them for retraining. Nothing is deleted from MLflow.

A model version is affected when its source run (or, in MLflow 3, the run its logged model
came from: `source_run_id`) logged an input dataset (`mlflow.log_input`) whose source is a
dataset holding the subject: a Delta table path (with or without `delta_table_version`), a
Parquet path, or a Feast feature view (`feast://<project>/<view>` as the dataset's name or
source uri). It is version-aware: a run that read a Delta version which does not contain the
subject (read by time travel), or one committed after the subject's erasure, is not affected.

Flagging sets model version tags (`erasure.retrain_required` = `true`, and one
`erasure.request.<request id>` tag naming the dataset and version, never the subject) and
adds a line to the description. Flags run before the data is erased (erase_order -10): the
version check reads the training version by time travel, which the purge makes impossible.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional, Sequence

from erasure.errors import UnknownDatasetError

from .base import (Capabilities, ConnectorPlugin, EraseResult, Presentation, ReaderView,
                   ReadsVersions, TargetCount, last_parts)
from .mlflow_config import MlflowConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from erasure.config import Config

    from .base import ConnectorRegistry

FLAG = "erasure.retrain_required"
REQUEST_TAG = "erasure.request."
SUPERSEDED = "erasure.superseded_by"


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str
    registry_uri: str | None = None


@dataclass
class TrainingInput:
    run_id: str
    dataset: tuple[str, str]            # dataset identity (namespace, name)
    version: int | None                 # Delta version the run read, if logged
    raw_source: str
    run_start_ms: int | None = None     # to date an unversioned Delta read (MLflow drops v0)


@dataclass
class ModelVersionRef:
    model: str
    version: str
    run_id: str | None
    aliases: list[str] = field(default_factory=list)


class MlflowPresentation(Presentation):
    def plan_lines(self, t: dict[str, Any]) -> list[str]:
        d, src = t.get("details", {}), t.get("derived_from") or {}
        aliases = ", ".join(d.get("aliases") or []) or "none"
        learned = "learned from the subject" if t["rows"] else "did not see the subject"
        return [f"trained on {src.get('name')} version {src.get('dataset_version')} "
                f"({learned}); aliases: {aliases}"] + super().plan_lines(t)[1:]

    def report_cells(self, t: dict[str, Any], erase: dict[str, Any], purge: dict[str, Any],
                     verify: dict[str, Any]) -> tuple[Any, Any, str]:
        src = t.get("derived_from") or {}
        v = src.get("dataset_version")
        versions = (f"trained on {last_parts(src.get('name', ''))} "
                    + (f"v{v}" if v is not None else "(version not logged)"))
        return ("in training data" if t["rows"] else "not in training data",
                "flagged" if verify.get("kind") == "step.completed" and t["rows"] else "-",
                versions)


def key_suffix(dataset: str, version: int | None) -> str:
    """One model version trained on several datasets (or versions) is one target per
    dataset: the suffix of its target key, `|<dataset name>@<version>` (format fixed: the
    key names the target in the ledger's step entries)."""
    return f"|{dataset}@{version}"


def dataset_identity(text: str) -> tuple[str, str] | None:
    """A dataset identity from an MLflow dataset source path or uri."""
    if not text:
        return None
    if text.startswith("feast://"):
        project, _, rest = text[len("feast://"):].partition("/")
        return (f"feast://{project}", rest) if rest else None
    for scheme in ("s3://", "s3a://", "gs://", "abfss://"):
        if text.startswith(scheme):
            bucket, _, key = text[len(scheme):].partition("/")
            return (f"{scheme}{bucket}", key.rstrip("/"))
    if text.startswith("file://"):
        text = text[len("file://"):]
    if text.startswith("/"):
        return ("file", text.rstrip("/"))
    return None


class MlflowConnector:
    name = "mlflow"
    capabilities = Capabilities(
        residue_scan=False, batch=True, guard="exact", erase_order=-10,
        notes=("flags model versions for retraining; deletes nothing from MLflow",
               "models trained outside MLflow, or without logged inputs, cannot be found"),
        provenance_context=True)   # the runner passes derived_from and request ids
    presentation = MlflowPresentation("MLflow model version", "MLflow model versions",
                                      "flagged for retraining", color="#7a4fa8",
                                      verdict_note="model versions flagged for retraining")

    def __init__(self, settings: MlflowSettings, registry: ConnectorRegistry | None = None):
        self.settings = settings
        self.registry = registry
        self.namespace = "mlflow:" + re.sub(r"//[^@/]*@", "//", settings.tracking_uri)
        self._client: MlflowClient | None = None
        self._index: tuple[list[TrainingInput], dict[str, list[ModelVersionRef]]] | None = None
        self._datasets: dict[tuple[str, str], Any] = {}   # dataset identity -> ResolvedTarget

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.settings.tracking_uri,
                                        registry_uri=self.settings.registry_uri or
                                        self.settings.tracking_uri)
        return self._client

    def handles(self, namespace: str, name: str) -> bool:
        return namespace == self.namespace

    # ---- index of runs and model versions ------------------------------------------------
    def index(self) -> tuple[list[TrainingInput], dict[str, list[ModelVersionRef]]]:
        """Every logged training input of every run, and model versions by run id. One pass
        over the store (MLflow cannot search runs by dataset source)."""
        if self._index is not None:
            return self._index
        from mlflow.entities import ViewType

        c = self.client
        exp_ids, token = [], None
        while True:
            page = c.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
            exp_ids += [e.experiment_id for e in page]
            token = page.token
            if not token:
                break
        inputs: list[TrainingInput] = []
        for i in range(0, len(exp_ids), 100):
            token = None
            while True:
                runs = c.search_runs(exp_ids[i:i + 100], run_view_type=ViewType.ALL,
                                     max_results=10_000, page_token=token)
                for r in runs:
                    for di in (r.inputs.dataset_inputs if r.inputs else []):
                        inputs.extend(self._inputs_of(r.info.run_id, di.dataset,
                                                      r.info.start_time))
                token = runs.token
                if not token:
                    break
        by_run: dict[str, list[ModelVersionRef]] = {}
        token = None
        while True:
            versions = c.search_model_versions(max_results=10_000, page_token=token)
            for mv in versions:
                run_id = mv.run_id or self._source_run(mv)
                ref = ModelVersionRef(mv.name, str(mv.version), run_id, list(mv.aliases or []))
                if run_id:
                    by_run.setdefault(run_id, []).append(ref)
            token = versions.token
            if not token:
                break
        self._index = (inputs, by_run)
        return self._index

    def _source_run(self, mv) -> str | None:
        """MLflow 3: a version registered from a logged model links to its run through the
        logged model's source_run_id."""
        src = mv.source or ""
        model_id = getattr(mv, "model_id", None) or (
            src[len("models:/"):] if src.startswith("models:/m-") else None)
        if not model_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_logged_model(model_id).source_run_id
        except MlflowException:   # the logged model was deleted: no run to follow
            return None

    @staticmethod
    def _inputs_of(run_id: str, ds, start_ms: int | None = None) -> list[TrainingInput]:
        out = []
        try:
            src = json.loads(ds.source) if ds.source else {}
        except (TypeError, json.JSONDecodeError):
            src = {}
        candidates = [ds.name or ""] + [str(v) for k, v in src.items()
                                        if k in ("path", "uri", "url") and isinstance(v, str)]
        version = src.get("delta_table_version") if isinstance(src, dict) else None
        for text in candidates:
            ident = dataset_identity(text)
            if ident:
                out.append(TrainingInput(run_id, ident, int(version) if version is not None
                                         else None, ds.source or "",
                                         start_ms if ds.source_type == "delta_table" else None))
        return out

    # ---- lineage join -------------------------------------------------------------------
    def derive_targets(self, graph, dataset_targets: list, unresolved: list[dict]):
        from erasure.planning import ResolvedTarget

        keyed: dict[tuple[str, str], Any] = {}
        for t in dataset_targets:
            ident = (t.namespace, t.name) if t.namespace.startswith("feast://") else \
                graph.canonical((t.namespace, t.name))
            keyed.setdefault(ident, t)
        inputs, by_run = self.index()
        targets, seen = [], set()
        for ti in inputs:
            ident = ti.dataset if ti.dataset[0].startswith("feast://") else graph.canonical(ti.dataset)
            src = keyed.get(ident)
            if src is None:
                continue
            for mv in by_run.get(ti.run_id, []):
                key = (mv.model, mv.version, ident, ti.version)
                if key in seen:
                    continue
                seen.add(key)
                self._datasets[ident] = src
                targets.append(ResolvedTarget(
                    self.namespace, f"{mv.model}/{mv.version}", self, src.column, src.key_type,
                    "trained_on",
                    {"namespace": ident[0], "name": ident[1], "column": src.column,
                     "job": f"run:{ti.run_id}", "dataset_version": ti.version,
                     "run_start_ms": ti.run_start_ms, "aliases": mv.aliases},
                    key_suffix(ident[1], ti.version)))
        targets += self._lineage_linked(graph, dataset_targets, unresolved, seen)
        return targets, [], []

    def _lineage_linked(self, graph, dataset_targets: list, unresolved: list[dict],
                        seen: set) -> list:
        """Models that lineage events name as a job's output (`models:/<name>/<version>`)
        downstream of a dataset holding the subject. They were listed as unresolved (no
        connector for the dataset); they become model targets here."""
        from erasure.planning import ResolvedTarget

        out = []
        for t in dataset_targets:
            if t.connector is self:
                continue
            for job, ds in graph.downstream((t.namespace, t.name)):
                m = re.fullmatch(r"models:/([^/]+)/(\d+)", ds[1])
                if not m:
                    continue
                key = (m.group(1), m.group(2), (t.namespace, t.name), None)
                if key in seen:
                    continue
                seen.add(key)
                out.append(ResolvedTarget(
                    self.namespace, f"{m.group(1)}/{m.group(2)}", self, t.column, t.key_type,
                    "trained_on",
                    {"namespace": t.namespace, "name": t.name, "column": t.column,
                     "job": f"lineage:{job[0]}/{job[1]}", "dataset_version": None, "aliases": []},
                    key_suffix(t.name, None)))
                unresolved[:] = [u for u in unresolved
                                 if not (u["namespace"] == ds[0] and u["name"] == ds[1])]
        return out

    # ---- measuring ------------------------------------------------------------------------
    def _parse(self, name: str, derived: dict) -> tuple[str, str]:
        model, _, version = name.rpartition("/")
        if not model:
            raise UnknownDatasetError(f"not a model version: {name}")
        return model, version

    def subject_in_training(self, derived: dict, values: Sequence[Any]) -> dict[Any, int | None]:
        """1 when the dataset version the run read held the subject's rows, 0 when it did
        not, None when that can no longer be known (the version was vacuumed, say)."""
        ident = (derived["namespace"], derived["name"])
        column = derived["column"]
        src = self._datasets.get(ident)
        conn = src.connector if src is not None else (
            self.registry.for_dataset(*ident) if self.registry is not None else None)
        if conn is None:
            return {v: None for v in values}
        if isinstance(conn, ReadsVersions):   # Delta: read the version the run read
            version = derived.get("dataset_version")
            if version is None and derived.get("run_start_ms"):
                # MLflow drops version 0 from a logged DeltaDatasetSource, so an unversioned
                # read is dated by the run
                version = conn.version_at(ident[0], ident[1], derived["run_start_ms"])
            if version is None:
                return {v: None for v in values}
            then = conn.rows_at_version(ident[0], ident[1], column, values, version)
            if then is None:
                # vacuumed or cleaned from the log: that version cannot be read, so whether
                # the model saw the subject is unknown (None), never "did not"
                return {v: None for v in values}
            return {v: int(n > 0) for v, n in then.items()}
        if isinstance(conn, ReaderView):   # Feast: online keys or offline rows it reads
            seen = conn.rows_readers_see(ident[0], ident[1], column, values)
            return {v: int(seen.get(v, 0) > 0) for v in values}
        # no versions (Parquet): the data now stands for the data then
        rows = conn.live_rows(ident[0], ident[1], column, values)
        return {v: int(n > 0) for v, n in rows.items()}

    @staticmethod
    def _judged(present: dict[Any, int | None], planned: dict[Any, int] | None) -> dict[Any, int]:
        """What counts: the plan's measurement where there is one (it was taken before any
        data changed); else the measurement, unknown counting as present (flag rather than
        miss a model)."""
        if planned:
            return {v: int(bool(planned.get(v, 0))) for v in present}
        return {v: 1 if n is None else n for v, n in present.items()}

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True, derived: dict | None = None) -> TargetCount:
        model, version = self._parse(name, derived or {})
        mv = self.client.get_model_version(model, version)
        measured: dict[Any, int | None] = (
            self.subject_in_training(derived or {}, values) if derived else {v: None for v in values})
        rows = self._judged(measured, None)
        flagged = mv.tags.get(FLAG) == "true"
        details = {v: {"model": model, "version": version, "aliases": list(mv.aliases or []),
                       "trained_on_dataset_version": (derived or {}).get("dataset_version"),
                       "measured": "unknown, counted as present" if measured[v] is None
                       else "by the dataset at that version",
                       "flagged": flagged} for v in values}
        return TargetCount(rows=rows, files={v: [] for v in values}, version=None,
                           residue={v: [] for v in values}, details=details)

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        raise UnknownDatasetError(
            f"{namespace}:{name} is an MLflow model version: model versions are reached "
            "through the training inputs of their runs, never by a key column")

    def live_rows(self, namespace, name, column, values, derived: dict | None = None,
                  requests=None, planned: dict[Any, int] | None = None):
        return self._judged(self.subject_in_training(derived or {}, values)
                            if derived and not planned else {v: None for v in values}, planned)

    # ---- flagging -------------------------------------------------------------------------
    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any], tag: str,
              derived: dict | None = None, requests: dict[Any, list[str]] | None = None,
              planned: dict[Any, int] | None = None) -> EraseResult:
        """Flag the model version for the subjects whose data it learned from (idempotent)."""
        model, version = self._parse(name, derived or {})
        present = self._judged(self.subject_in_training(derived or {}, values)
                               if derived and not planned else {v: None for v in values}, planned)
        rids = sorted({r for v, n in present.items() if n for r in (requests or {}).get(v, [])})
        if not any(present.values()):
            return EraseResult(0, None, None, 0, 0)
        self.flag(model, version, rids, derived or {})
        return EraseResult(sum(present.values()), None, None, 0, 0)

    def flag(self, model: str, version: str, request_ids: list[str], derived: dict) -> None:
        c = self.client
        mv = c.get_model_version(model, version)
        ds = f"{derived.get('name')}" + (f"@v{derived['dataset_version']}"
                                        if derived.get("dataset_version") is not None else "")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if mv.tags.get(FLAG) != "true":
            c.set_model_version_tag(model, version, FLAG, "true")
        lines = (mv.description or "").splitlines()
        for rid in request_ids:
            key = REQUEST_TAG + rid
            datasets = json.loads(mv.tags.get(key, "[]"))
            if ds not in datasets:
                c.set_model_version_tag(model, version, key, json.dumps(sorted(datasets + [ds])))
            line = f"[erasure] retrain required: trained on {ds}, which held data erased under {rid}"
            if not any(line in x for x in lines):
                lines.append(f"{line} ({now})")
        if lines != (mv.description or "").splitlines():
            c.update_model_version(model, version, description="\n".join(lines))

    def verify(self, namespace: str, name: str, column: str, values: Sequence[Any],
               derived: dict, requests: dict[Any, list[str]],
               planned: dict[Any, int] | None = None,
               erased_versions: dict[str, int] | None = None) -> dict[Any, list[str]]:
        """Problems per subject: a model that learned from the subject must carry the flag
        and the request's tag. Also marks the flag superseded when a newer version of the
        same model was trained on a version of the dataset without the subject."""
        model, version = self._parse(name, derived)
        mv = self.client.get_model_version(model, version)
        # the plan measured before anything changed; after the purge it cannot be measured again
        present = self._judged(self.subject_in_training(derived, values)
                               if not planned else {v: None for v in values}, planned)
        out: dict[Any, list[str]] = {}
        for v in values:
            problems = []
            if present.get(v):
                if mv.tags.get(FLAG) != "true":
                    problems.append(f"model {model} v{version} is not flagged {FLAG}")
                for rid in requests.get(v, []):
                    if REQUEST_TAG + rid not in mv.tags:
                        problems.append(f"model {model} v{version} has no tag {REQUEST_TAG}{rid}")
            out[v] = problems
        if mv.tags.get(FLAG) == "true" and SUPERSEDED not in mv.tags:
            newer = self.clean_successor(model, int(version), derived, values,
                                         (erased_versions or {}).get(derived["name"]))
            if newer is not None:
                self.client.set_model_version_tag(model, version, SUPERSEDED, str(newer))
        return out

    def clean_successor(self, model: str, version: int, derived: dict,
                        values: Sequence[Any], erased_version: int | None = None) -> int | None:
        """The newest later version trained on the same dataset at a version known to hold
        none of these subjects: committed at or after their erasure, or read by time travel
        and found without them. An unreadable version is not clean."""
        inputs, by_run = self.index()
        ident = (derived["namespace"], derived["name"])
        best = None
        for ti in inputs:
            if ti.dataset != ident:
                continue
            for mv in by_run.get(ti.run_id, []):
                if mv.model == model and int(mv.version) > version and ti.version is not None:
                    if erased_version is not None and ti.version >= erased_version:
                        best = max(best or 0, int(mv.version))
                        continue
                    d = {**derived, "dataset_version": ti.version}
                    if all(n == 0 for n in self.subject_in_training(d, values).values()):
                        best = max(best or 0, int(mv.version))
        return best

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        return {"mode": "flag", "remains": ["the model's learned parameters (retrain it)"],
                "until": None,
                "note": "model version tagged erasure.retrain_required=true; retrain and re-register"}


def settings_from(mlflow, base_dir=None) -> MlflowSettings | None:
    """The connection settings from the typed `[mlflow]` section (the pydantic model
    `connectors.mlflow_config.MlflowConfig`, checked when the config was loaded: unknown keys
    and empty strings are refused there), or None when the section is absent. A relative
    sqlite path resolves against the config's folder."""
    if mlflow is None:
        return None

    def resolve(uri: str) -> str:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and base_dir:
            return "sqlite:///" + str(base_dir / uri[len("sqlite:///"):])
        if uri.startswith(("postgresql://", "postgres://")):
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the installed driver
            # is psycopg2 (MLflow's own default)
            return "postgresql+psycopg2://" + uri.split("://", 1)[1]
        return uri
    return MlflowSettings(resolve(mlflow.tracking_uri),
                          mlflow.registry_uri and resolve(mlflow.registry_uri))


def _build(config: Config, registry: ConnectorRegistry) -> MlflowConnector | None:
    section = config.section("mlflow")
    if section is None:
        return None
    from . import extras

    extras.require(extras.MLFLOW)
    uris = (section.tracking_uri, section.registry_uri or "")
    if any(u.startswith(("postgresql:", "postgresql+psycopg2:", "postgres:")) for u in uris):
        extras.require(extras.MLFLOW_POSTGRES)
    settings = settings_from(section, config.base_dir)
    assert settings is not None
    return MlflowConnector(settings, registry)


PLUGIN = ConnectorPlugin("mlflow", MlflowConnector.presentation, _build, section="mlflow",
                         model=Optional[MlflowConfig], default=lambda: None, order=90)

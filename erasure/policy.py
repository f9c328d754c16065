"""Exemptions as policy code: a Rego policy decides, per dataset, whether a request erases it.

The contract (docs/policy.md): the policy is Rego package `erasure`, rule `decision`, an object
`{"action": "erase" | "exempt" | "defer", "basis": "<text>"}`; no decision (undefined) means
erase. Its input is `{"dataset": {namespace, name, columns, facets}, "request": {reason,
received, identity_types}, "holds": [...]}`, built by `dataset_input`, `request_input` and
`policy_input`; it never holds a subject id or an identity value.

Two sources: Rego files evaluated in this process with regopy (`[policy] rego`, a file or a
folder), or an OPA server's REST API (`[policy] opa_url`). Either way a `Policy` has a `hash`
of its modules (recorded with every plan), a `source`, and `decide(input)`, which caches each
decision by the input's canonical JSON. A policy that cannot be read, parsed or evaluated, or a
decision outside the contract, is a `PolicyError` (a ConfigError: exit 3, nothing recorded).

This module imports regopy only when a Rego policy is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

from .canonical import canonical_text
from .errors import ConfigError

QUERY = "data.erasure.decision"
ENTRYPOINT = "erasure/decision"
ACTIONS = ("erase", "exempt", "defer")


class PolicyError(ConfigError):
    """The policy cannot be loaded or evaluated, or a decision breaks the contract (exit 3)."""


@dataclass(frozen=True)
class Decision:
    action: str          # "erase", "exempt" or "defer"
    basis: str           # why; "" for the default erase (no decision)


ERASE = Decision("erase", "")


# ---- the input document ---------------------------------------------------------------------
def dataset_input(graph: Any, namespace: str, name: str,
                  columns: Iterable[str] | None = None) -> dict[str, Any]:
    """The input's "dataset" part from the lineage graph (`LineageGraph`): the namespace and
    name as given, its columns (the schema facet's field names, sorted; `columns` replaces
    them when given) and its facets as the events carried them, every one but the structural
    schema, columnLineage and symlinks (`LineageGraph.info`)."""
    info = graph.info((namespace, name))
    cols = sorted(set(columns if columns is not None else info["fields"]))
    return {"namespace": namespace, "name": name, "columns": cols,
            "facets": dict(info.get("facets") or {})}


def request_input(reason: str | None, received: date | datetime | str | None,
                  identity_types: Iterable[str]) -> dict[str, Any]:
    """The input's "request" part: the request's reason (null when it gave none), the day it
    was received ("YYYY-MM-DD"; a datetime or ISO text is cut to its date; null when not
    known, e.g. a plan for a subject that was never submitted) and the types of identity it
    carries (sorted names, never values). A `received` that is no date is a ValueError."""
    if isinstance(received, datetime):
        day: str | None = received.date().isoformat()
    elif isinstance(received, date):
        day = received.isoformat()
    elif received:
        day = date.fromisoformat(str(received)[:10]).isoformat()
    else:
        day = None
    return {"reason": reason, "received": day, "identity_types": sorted(set(identity_types))}


def policy_input(dataset: dict[str, Any], request: dict[str, Any],
                 holds: Iterable[Any] = ()) -> dict[str, Any]:
    """The whole input document, in the contract's shape."""
    return {"dataset": dataset, "request": request, "holds": list(holds)}


# ---- the policy -------------------------------------------------------------------------------
class Policy:
    """A loaded policy: `hash` ("sha256:<hex>" of its modules), `source` ("rego:<path>" or
    "opa:<url>") and `decide`. `evaluations` counts the evaluations actually made (the rest
    came from the cache)."""

    def __init__(self, hash: str, source: str):
        self.hash = hash
        self.source = source
        self.evaluations = 0
        self._cache: dict[str, Decision] = {}

    def decide(self, input: dict[str, Any]) -> Decision:
        """The decision for one input document; the same input (by its canonical JSON) is
        evaluated once. Raises PolicyError naming the dataset when the policy fails or its
        decision is not `{"action": one of erase/exempt/defer, "basis": text}`."""
        key = canonical_text(input)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        where = _dataset_name(input)
        self.evaluations += 1
        found, value = self._evaluate(input, where)
        decision = _checked(value, where) if found else ERASE
        self._cache[key] = decision
        return decision

    def _evaluate(self, input: dict[str, Any], where: str) -> tuple[bool, Any]:
        """(False, None) when the decision is undefined, else (True, the decision's value)."""
        raise NotImplementedError


def _dataset_name(input: dict[str, Any]) -> str:
    ds = input.get("dataset") if isinstance(input, dict) else None
    if isinstance(ds, dict):
        return f"{ds.get('namespace')}:{ds.get('name')}"
    return "<no dataset in the input>"


def _checked(value: Any, where: str) -> Decision:
    def bad(what: str) -> PolicyError:
        return PolicyError(f"policy decision for dataset {where} {what}: "
                           f"{json.dumps(value, ensure_ascii=False)[:300]}")

    if not isinstance(value, dict):
        raise bad('is not an object {"action": ..., "basis": ...}')
    unknown = sorted(set(value) - {"action", "basis"})
    if unknown:
        raise bad(f"has unknown key(s) {', '.join(unknown)} (a decision has action and basis)")
    action = value.get("action")
    if action not in ACTIONS:
        raise bad(f"has action {json.dumps(action)}, not one of {', '.join(ACTIONS)}")
    basis = value.get("basis", "")
    if not isinstance(basis, str):
        raise bad("has a basis that is not a string")
    if action != "erase" and not basis.strip():
        raise bad(f"says {action} without a basis (the legal ground, as text)")
    return Decision(action, basis)


# ---- Rego files, in-process (regopy) ------------------------------------------------------------
class RegoPolicy(Policy):
    """Rego modules evaluated with regopy. The interpreter is built once, with every module,
    and the modules compiled once into a bundle for the `erasure/decision` entry point; each
    evaluation only sets the input and queries the bundle (about 8x faster than querying the
    modules, docs/policy.md#performance). Built-in errors (a division by zero, a bad
    conversion) are errors, not an undefined decision (regopy's strict built-in errors)."""

    def __init__(self, hash: str, source: str, modules: list[tuple[str, Path, str]]):
        super().__init__(hash, source)
        import importlib.util

        if importlib.util.find_spec("regopy") is None:
            raise PolicyError("[policy] rego is configured but regopy is not installed: "
                              "pip install 'erasure[policy]'")
        import regopy  # type: ignore[import-untyped]

        self._rego = regopy.Interpreter()
        self._rego.strict_built_in_errors = True
        for name, path, text in modules:
            with _stdout_captured() as printed:
                try:
                    self._rego.add_module(name, text)
                except regopy.RegoError as exc:
                    failure: Exception | None = exc
                else:
                    failure = None
            if failure is not None:
                raise PolicyError(f"policy module {path} does not parse: "
                                  f"{_rego_messages(str(failure), text, printed.text)}") from None
        with _stdout_captured() as printed:
            try:
                self._bundle = self._rego.build(QUERY, [ENTRYPOINT])
                failure = None
            except regopy.RegoError as exc:
                failure = exc
        if failure is not None or not self._bundle.ok():
            raise PolicyError(f"policy {source} does not compile: "
                              f"{_rego_messages(str(failure or ''), '', printed.text)}")

    def _evaluate(self, input: dict[str, Any], where: str) -> tuple[bool, Any]:
        import regopy

        with _stdout_captured() as printed:
            try:
                self._rego.set_input(input)
                out = self._rego.query_bundle_entrypoint(self._bundle, ENTRYPOINT)
                failure: str | None = None
            except json.JSONDecodeError as exc:  # an error term inside the result
                failure = _rego_messages(exc.doc, "", "")
            except regopy.RegoError as exc:
                failure = _rego_messages(str(exc), "", "")
        if failure is None and not out.ok():          # an error sequence, e.g. a conflict
            errors = out.node()
            failure = _rego_messages(" ".join(errors.at(i).json() for i in range(len(errors))),
                                     "", "")
        if failure is not None:
            extra = f" ({printed.text.strip()[:300]})" if printed.text.strip() else ""
            raise PolicyError(f"policy failed on dataset {where}: {failure}{extra}")
        if len(out) == 0 or not out[0].expressions:
            return False, None                       # undefined: no decision
        return True, out[0].expressions[0]


_ERRORMSG = re.compile(r"\(errormsg (\d+):")
_ERROR_AT = re.compile(r"\(error (\d+):")


def _rego_messages(errors: str, source: str, printed: str) -> str:
    """rego-cpp's error terms, as `file:line:col: message; ...`. Its strings are length
    prefixed (`8:bad.rego`, `16:this is unclosed`), so they are read by their length."""
    out = []
    for m in _ERRORMSG.finditer(errors):
        n, start = int(m.group(1)), m.end()
        message = errors[start:start + n]
        # the location, `(error <n>:<file>|<offset>|<length>`, just before the message
        at = [a for a in _ERROR_AT.finditer(errors, 0, m.start())]
        where = ""
        if at:
            a = at[-1]
            k, s = int(a.group(1)), a.end()
            file = errors[s:s + k]
            offset = re.match(r"\|(\d+)\|", errors[s + k:])
            if offset and source:
                pos = int(offset.group(1))
                line = source.count("\n", 0, pos) + 1
                col = pos - (source.rfind("\n", 0, pos) + 1) + 1
                where = f"{file}:{line}:{col}: "
            elif file:
                where = f"{file}: "
        out.append(where + message)
    if out:
        return "; ".join(dict.fromkeys(out))
    text = (printed or errors).strip()
    return " ".join(text.split())[:500] or "unknown error"


class _Printed:
    text = ""


@contextmanager
def _stdout_captured() -> Iterator[_Printed]:
    """What native code prints on file descriptor 1 while the block runs, kept out of stdout
    (rego-cpp prints its parse errors there, and `--json` output must stay clean)."""
    printed = _Printed()
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 1)
            try:
                yield printed
            finally:
                _flush_c_stdout()
                os.dup2(saved, 1)
                tmp.seek(0)
                printed.text = tmp.read().decode("utf-8", "replace")
    finally:
        os.close(saved)


def _flush_c_stdout() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):       # no C library to flush: nothing buffered there
        pass


def _files_hash(files: Iterable[tuple[str, bytes]]) -> str:
    """sha256 of `sha256sum`'s output over the files, sorted by name: a line
    "<sha256 hex>  <name>\\n" per file. The same files give the same hash anywhere; from the
    policy folder, `find . -name '*.rego' -type f | sed 's|^\\./||' | LC_ALL=C sort |
    xargs sha256sum | sha256sum` prints it (docs/policy.md)."""
    lines = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                    for name, data in sorted(files))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()


_PACKAGE_ERASURE = re.compile(r"^[ \t]*package[ \t]+erasure[ \t]*(#.*)?$", re.MULTILINE)


def load_rego(path: Path, shown: str | None = None) -> RegoPolicy:
    """A file, or every *.rego file under a folder (recursively, sorted by relative path)."""
    shown = shown or str(path)
    if path.is_dir():
        root = path
        files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.rego")
                       if p.is_file())
        if not files:
            raise PolicyError(f"[policy] rego: no .rego file under {path}")
        source = f"rego:{shown.rstrip('/')}/"
    elif path.is_file():
        root = path.parent
        files = [(path.name, path)]
        source = f"rego:{shown}"
    else:
        raise PolicyError(f"[policy] rego: no such file or folder: {path}")
    modules, raw = [], []
    for name, p in files:
        try:
            data = p.read_bytes()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"policy module {p} cannot be read: {exc}") from None
        raw.append((name, data))
        modules.append((name, p, text))
    if not any(_PACKAGE_ERASURE.search(text) for _, _, text in modules):
        raise PolicyError(f"[policy] rego: no module declares `package erasure` (read "
                          f"{', '.join(str(p) for _, p, _ in modules)})")
    return RegoPolicy(_files_hash(raw), source, modules)


# ---- an OPA server (REST API) -------------------------------------------------------------------
class OpaPolicy(Policy):
    """An OPA server: `POST {url}/v1/data/erasure/decision` per evaluation. Untested against a
    real OPA (none on the machine this was written on): only its failures are tested."""

    def __init__(self, url: str, timeout: float, hash: str):
        super().__init__(hash, f"opa:{url}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    @classmethod
    def connect(cls, url: str, timeout: float) -> "OpaPolicy":
        """The server's policy, hashed from the raw text of every module it holds
        (`GET /v1/policies`, sorted by id)."""
        body = _opa_call("GET", url.rstrip("/") + "/v1/policies", None, timeout)
        result = body.get("result")
        if not isinstance(result, list) or not all(
                isinstance(m, dict) and isinstance(m.get("id"), str)
                and isinstance(m.get("raw"), str) for m in result):
            raise PolicyError(f"OPA server {url}: /v1/policies did not list modules "
                              "({\"result\": [{\"id\", \"raw\"}, ...]})")
        if not result:
            raise PolicyError(f"OPA server {url} holds no policy module")
        return cls(url, timeout, _files_hash((m["id"], m["raw"].encode("utf-8"))
                                             for m in result))

    def _evaluate(self, input: dict[str, Any], where: str) -> tuple[bool, Any]:
        body = _opa_call("POST", f"{self.url}/v1/data/erasure/decision", {"input": input},
                         self.timeout, where)
        if "result" not in body:
            return False, None
        return True, body["result"]


def _opa_call(method: str, url: str, payload: Any, timeout: float,
              where: str | None = None) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    about = f" (dataset {where})" if where else ""
    data = json.dumps(payload).encode("utf-8") if payload is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise PolicyError(f"OPA server: {method} {url}{about} answered HTTP {exc.code}: "
                          f"{detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PolicyError(f"OPA server: {method} {url}{about} failed: {reason}") from None
    if status != 200:
        raise PolicyError(f"OPA server: {method} {url}{about} answered HTTP {status}")
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise PolicyError(f"OPA server: {method} {url}{about} answered something that is "
                          f"not a JSON object: {text[:200]!r}")
    return body


# ---- from the config ----------------------------------------------------------------------------
def load_policy(config: Any) -> Policy | None:
    """The policy `[policy]` names (`config.policy`), or None when it names none."""
    section = config.policy
    if section.rego:
        path = Path(section.rego)
        base = getattr(config, "base_dir", None)
        shown = str(path)
        if base is not None:
            try:
                shown = path.relative_to(base).as_posix()
            except ValueError:
                pass
        return load_rego(path, shown)
    if section.opa_url:
        return OpaPolicy.connect(section.opa_url, section.timeout)
    return None

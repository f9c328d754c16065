"""Enrichment: from the identities a request carries to every key of the person.

`[[enrich]]` entries name lookup tables (a CRM table mapping e-mail addresses to customer
ids, say). Planning follows them transitively: an e-mail gives a customer id, which gives user
ids, until nothing new is found, at most MAX_HOPS rounds. A lookup that returns more than the
entry's `max_values` values for one identity is ambiguous: exit 4, nothing recorded. Each
derived identity is recorded in the plan by type and HMAC with where it came from (the table,
its columns and the version read); its value is sealed with the plan (`Ledger` sealed subjects,
under `<request>#plan`), so a resumed run, `verify` and the sweep use the same identities even
after the lookup table itself was erased.

Only typed identities are looked up; an untyped `--subject-id` is not (its type is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InputError, SubjectKeyTypeError
from .identity import Subject, normalized

if TYPE_CHECKING:
    from connectors.base import ConnectorRegistry

    from .config import Config

MAX_HOPS = 5


@dataclass
class Enriched:
    subject: Subject                                   # the request's identities and derived ones
    derived: list[dict[str, Any]] = field(default_factory=list)   # type, value, source, version


def _norm(config: Config, typ: str, value: Any) -> str:
    spec = config.identities.get(typ)
    return normalized(spec.normalize if spec else None, str(value))


def enrich_subjects(config: Config, registry: ConnectorRegistry,
                    subjects: list[tuple[str, str]]) -> dict[str, Enriched]:
    """Per subject hmac, its identities after following every `[[enrich]]` entry."""
    from connectors.base import FindsKeyVariants, LooksUp

    from .subject import coerce_subject_id

    state = {hm: Enriched(Subject.parse(text)) for hm, text in subjects}
    if not config.enrich:
        return state
    done: set[tuple[int, str, str]] = set()        # (entry, subject, value) looked up
    for _ in range(MAX_HOPS):
        grew = False
        for n, e in enumerate(config.enrich):
            conn = registry.for_dataset(e.namespace, e.name)
            if conn is None or not isinstance(conn, LooksUp):
                raise ConfigError(f"[[enrich]] {e.namespace}:{e.name}: no installed connector "
                                  "can look it up (it needs one that reads the table)")
            key_type = conn.key_type(e.namespace, e.name, e.from_column)
            if key_type is None or conn.key_type(e.namespace, e.name, e.to_column) is None:
                raise ConfigError(f"[[enrich]] {e.name}: column {e.from_column!r} or "
                                  f"{e.to_column!r} does not exist")
            asks: dict[Any, list[tuple[str, str]]] = {}
            for hm, st in state.items():
                for v in st.subject.of_type(e.from_identity):
                    if (n, hm, v) in done:
                        continue
                    done.add((n, hm, v))
                    try:
                        typed = coerce_subject_id(v, key_type, hm, f"{e.from_column} of {e.name}")
                    except SubjectKeyTypeError:
                        continue     # a value this table's column cannot hold finds nothing
                    asks.setdefault(typed, []).append((hm, v))
            if not asks:
                continue
            spec = config.identities.get(e.from_identity)
            spellings: dict[Any, list[Any]] = {k: [k] for k in asks}
            if spec is not None and spec.normalize and isinstance(conn, FindsKeyVariants) \
                    and key_type in ("string", "large_string"):
                # every stored spelling of a normalized identity is looked up too
                found_v = conn.key_variants(e.namespace, e.name, e.from_column,
                                            spec.normalize, [str(k) for k in asks])
                spellings = {k: list(dict.fromkeys([k, *found_v.get(str(k), [])]))
                             for k in asks}
            found, version = conn.lookup(e.namespace, e.name, e.from_column, e.to_column,
                                         list(dict.fromkeys(x for xs in spellings.values()
                                                            for x in xs)))
            for typed, who in asks.items():
                got = list(dict.fromkeys(x for sp in spellings[typed]
                                         for x in found.get(sp, [])))
                if len(got) > e.max_values:
                    raise InputError(
                        f"subject {who[0][0][:12]}…: the lookup in {e.name} ({e.from_column} -> "
                        f"{e.to_column}) gives {len(got)} values for one {e.from_identity}, more "
                        f"than max_values = {e.max_values}: ambiguous, nothing was recorded")
                for hm, _ in who:
                    st = state[hm]
                    have = set(st.subject.identities)
                    new = [(e.to_identity, _norm(config, e.to_identity, x)) for x in got]
                    new = [p for p in dict.fromkeys(new) if p not in have and p[1]]
                    if not new:
                        continue
                    grew = True
                    st.subject = Subject(st.subject.subject_id,
                                         tuple(sorted(have | set(new))))
                    for typ, value in new:
                        st.derived.append({
                            "type": typ, "value": value, "version": version,
                            "source": (f"enriched from {e.from_identity} through "
                                       f"{e.namespace}:{e.name} ({e.from_column} -> "
                                       f"{e.to_column})")})
        if not grew:
            break
    return state


def records(enriched: Enriched, hmac_of: Any) -> list[dict[str, Any]]:
    """The derived identities as the plan records them: type, HMAC, source, version."""
    return [{"type": d["type"], "hmac": hmac_of(f"{d['type']}\x1f{d['value']}"),
             "source": d["source"], "version": d["version"]} for d in enriched.derived]

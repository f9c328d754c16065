"""Intake: the subject of a new request, built and checked by the rules every entry point
applies (the CLI's `request submit` and `plan`, the service's POST /v1/requests): declared
identity types and patterns, and every root's key column able to hold the ids, before
anything is recorded."""

from __future__ import annotations

from typing import Any, Iterable

from .identity import Subject


def subject_of(eng: Any, subject_id: str | None, pairs: Iterable[tuple[str, str]]) -> Subject:
    """A Subject from an untyped id and (type, value) identity pairs (InputError, exit 4,
    for an unknown type or a value failing its type's pattern; no value in messages)."""
    from .identity import build_subject

    return build_subject(subject_id, list(pairs), eng.config.identities,
                         [r.identity for r in eng.config.roots]
                         + [x for e in eng.config.enrich for x in (e.from_identity,
                                                                   e.to_identity)])


def check_subjects_fit_roots(eng: Any, ids: Iterable[tuple[str, str]], guard: Any = None) -> int:
    """Refuse ids that cannot match a root's key column (wrong type) before recording, and
    (with `guard`, a requests.TextGuard) ids that --reason or --requested-by name. `ids`:
    (where, id) pairs, `where` naming the source in messages ("--subject-id", "subjects
    file f line 7"), consumed as a stream. Returns how many ids there were."""
    from .errors import InputError, SubjectKeyTypeError, UnknownDatasetError
    from .identity import Subject
    from .subject import coerce_subject_id

    types = []
    for root in eng.config.roots:
        conn = eng.registry.for_dataset(root.namespace, root.name)
        if conn is None:
            raise UnknownDatasetError(f"root dataset {root.namespace}:{root.name} was not found "
                                      "or no connector handles it")
        typ = conn.key_type(root.namespace, root.name, root.column)
        if typ is None:
            raise UnknownDatasetError(f"root dataset {root.name} has no column {root.column!r}")
        types.append((typ, root.identity, f"{root.column} of {root.name}"))
    n = 0
    batch: list[tuple[str, str]] = []

    def enrich_check() -> None:
        """An ambiguous lookup (more than an [[enrich]] entry's max_values) is exit 4 before
        anything is recorded; the lookups run per batch of subjects."""
        if eng.config.enrich and batch:
            from .enrich import enrich_subjects

            try:
                enrich_subjects(eng.config, eng.registry,
                                [(eng.keys.subject_hmac(t), t) for _, t in batch])
            except InputError as exc:
                raise InputError(f"{batch[0][0] if len(batch) == 1 else 'a subject'}: "
                                 f"{exc}") from None
        batch.clear()

    for where, s in ids:
        n += 1
        if eng.config.enrich:
            batch.append((where, s))
            if len(batch) >= 1000:
                enrich_check()
        subject = Subject.parse(s)
        if guard is not None:
            for v in subject.values():
                guard.check(v, f"{where}: ")
        hm = eng.keys.subject_hmac(s)
        for kind, v in subject.identities:
            roots = [(typ, column) for typ, ident, column in types if ident == kind]
            if not roots and any(e.from_identity == kind for e in eng.config.enrich):
                continue     # looked up ([[enrich]]): what it gives is checked when planned
            if not roots:
                raise InputError(f"{where}: no [[roots]] entry holds {kind} identities, so "
                                 f"nothing could be erased by one; nothing was recorded")
            for typ, column in roots:
                try:
                    coerce_subject_id(v, typ, hm, column)
                except SubjectKeyTypeError as exc:
                    raise SubjectKeyTypeError(f"{where}: {exc}") from None
        if subject.subject_id is not None and not subject.identities:
            # an untyped id goes to every root whose key type can hold it; the others are
            # not applicable (the plan lists them). None at all is bad input.
            problems = []
            for typ, _, column in types:
                try:
                    coerce_subject_id(subject.subject_id, typ, hm, column)
                    break
                except SubjectKeyTypeError as exc:
                    problems.append(str(exc))
            else:
                raise SubjectKeyTypeError(f"{where}: no root's key column can hold it: "
                                          + "; ".join(problems))
    enrich_check()
    return n

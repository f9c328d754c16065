"""Every error the engine raises on purpose, and the exit code the CLI maps it to.

    ErasureError                      exit 1   base class, never raised directly
    ├── ConfigError                   exit 3   missing or invalid configuration
    │   └── PolicyError (policy.py)            the [policy] cannot be loaded or evaluated,
    │                                          or a decision breaks its contract
    ├── InputError                    exit 4   bad input: nothing was changed
    │   ├── MalformedEventError                an OpenLineage event failed validation
    │   ├── UnknownDatasetError                a dataset or table that does not exist
    │   ├── SubjectKeyTypeError                a subject id that does not fit a key column's type
    │   └── UnknownRequestError                a request id that is not in the ledger
    ├── ErasureFailed                 exit 5   an erasure step failed (terminal until an operator acts)
    │   ├── GuardTripped                       deleted rows differ from planned rows beyond tolerance
    │   ├── VerificationFailed                 the subject is still readable after the erasure
    │   ├── ConnectorError                     a dataset could not be read or written (the
    │   │                                      library's message, with subject keys redacted)
    │   └── ShreddedError (vault.py)           a sealed subject id whose Transit key was
    │                                          destroyed by `erasure shred`
    └── RetryableError                exit 75  operational: try again later (EX_TEMPFAIL)
        └── ConflictRetriesExhausted           concurrent writers kept winning the commit race

Exit codes 6 and 7 are not exceptions: `run` returns 6 when every target it could reach was
erased but some datasets downstream of the subject could not be resolved, or a part could not
be scanned or verified (an object store that is not listed): an operator must act. `verify`
and `sweep` return 6 for parts they could not verify; `sweep` returns 7 when it found a
subject back where it had been erased.

Messages never contain a subject identifier; they name a subject by its HMAC prefix.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Sequence


class ExitCode(IntEnum):
    """Every exit code of the CLI, in one place (docs/cli.md has the table)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    BAD_INPUT = 4
    FAILED = 5
    NEEDS_OPERATOR = 6     # unresolved datasets or parts not verified
    FOUND_AGAIN = 7        # a sweep found a subject back
    TRY_AGAIN = 75         # EX_TEMPFAIL


class ErasureError(Exception):
    exit_code = ExitCode.INTERNAL


class ConfigError(ErasureError):
    exit_code = ExitCode.CONFIG


class InputError(ErasureError):
    exit_code = ExitCode.BAD_INPUT


class MalformedEventError(InputError):
    pass


class UnknownDatasetError(InputError):
    pass


class SubjectKeyTypeError(InputError):
    pass


class UnknownRequestError(InputError):
    pass


class ErasureFailed(ErasureError):
    exit_code = ExitCode.FAILED


class GuardTripped(ErasureFailed):
    pass


class VerificationFailed(ErasureFailed):
    pass


class ConnectorError(ErasureFailed):
    pass


class RetryableError(ErasureError):
    exit_code = ExitCode.TRY_AGAIN


class ConflictRetriesExhausted(RetryableError):
    pass



def translated(exc: BaseException, where: str, keys: Sequence[Any] = (),
               limit: int = 500) -> ErasureError:
    """The one place a library's exception becomes one of ours. An ErasureError is returned
    unchanged; anything else becomes a ConnectorError that says where it happened, with the
    library's type and message, every subject key in it redacted (`subject.redact`), cut to
    `limit` characters. Callers raise what this returns (`raise translated(...) from None`)
    or record its text as a failed step."""
    if isinstance(exc, ErasureError):
        return exc
    from .subject import redact

    return ConnectorError(f"{where}: {type(exc).__name__}: {redact(str(exc), keys)[:limit]}")


def subject_args(argv: Sequence[str]) -> list[str]:
    """The subject ids a command line carries (`--subject-id X`, `--identity T=X`): the CLI's
    boundary redacts them from an unexpected error's text before printing it."""
    out, flags = [], ("--subject-id", "--identity")
    for i, a in enumerate(argv):
        if a in flags and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith(tuple(f + "=" for f in flags)):
            out.append(a.split("=", 1)[1])
    return out + [v.split("=", 1)[1] for v in out if "=" in v]

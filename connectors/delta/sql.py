"""Type-aware rendering of subject keys into DataFusion SQL, for read-only counting.

Erasure itself never puts a key in SQL: it merges against an Arrow table of keys. Counting
uses SQL (delta-rs' QueryBuilder reads deletion vectors and column mapping correctly) with
literals that cannot break out of their expression whatever the SQL dialect's escaping:
integers are rendered from Python ints, strings as `decode('<hex>', 'hex')` cast to Utf8,
whose only characters are [0-9a-f]. DataFusion folds them into constants, so file pruning
by statistics still applies.
"""

from __future__ import annotations

from typing import Any


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("boolean keys are not supported")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return f"arrow_cast(decode('{value.encode('utf-8').hex()}', 'hex'), 'Utf8')"
    raise TypeError(f"unsupported key type {type(value).__name__}")


def count_by_key_sql(column: str, values: list[Any]) -> str:
    col = quote_ident(column)
    lits = ", ".join(literal(v) for v in values)
    return f"SELECT {col} AS k, count(*) AS n FROM t WHERE {col} IN ({lits}) GROUP BY {col}"

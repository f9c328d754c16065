"""Matching subject keys in an Arrow column: the one place that knows the kernel quirks."""

from __future__ import annotations

from typing import Any


def comparable(arr):
    """delta-rs writes Utf8View and pandas large strings; `is_in` has no kernel for them."""
    import pyarrow as pa

    if pa.types.is_string_view(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    return arr


def key_mask(arr, value_set):
    """True where the column holds one of the keys (`value_set` typed like `comparable(arr)`)."""
    import pyarrow.compute as pc

    return pc.is_in(comparable(arr), value_set=value_set)


def key_counts(arr, value_set) -> dict[Any, int]:
    """Rows per key present in the column."""
    import pyarrow.compute as pc

    found = pc.filter(arr, key_mask(arr, value_set))
    if not len(found):
        return {}
    return {c["values"]: c["counts"] for c in pc.value_counts(comparable(found)).to_pylist()}


def normalize_arrow(arr, rule: str):
    """The identity normalization (erasure/identity.py `normalized`) as Arrow kernels, for a
    string column: `lower` trims whitespace and lowercases, `digits` keeps 0-9. The regex is
    fixed here, never built from an id."""
    import pyarrow.compute as pc

    arr = comparable(arr)
    if rule == "lower":
        return pc.utf8_lower(pc.utf8_trim_whitespace(arr))
    if rule == "digits":
        return pc.replace_substring_regex(arr, pattern="[^0-9]", replacement="")
    raise ValueError(f"unknown normalization {rule!r}")


def key_variants(arr, rule: str, values) -> dict[str, list[str]]:
    """For each normalized value, the distinct stored values of the string column `arr` whose
    normalized form equals it (each exactly as stored, sorted). Both sides are normalized by
    the same Arrow kernels, so the match does not depend on Python's and Arrow's case tables
    agreeing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = comparable(arr)
    wanted = pa.array(list(values), pa.string())
    as_arrow = normalize_arrow(wanted, rule).to_pylist()
    back = {a: v for a, v in zip(as_arrow, wanted.to_pylist())}
    uniq = pc.unique(arr.drop_null() if hasattr(arr, "drop_null") else arr)
    norm = normalize_arrow(uniq, rule)
    mask = pc.is_in(norm, value_set=pa.array(list(back), pa.string()))
    out: dict[str, list[str]] = {v: [] for v in values}
    for stored, n in zip(pc.filter(uniq, mask).to_pylist(), pc.filter(norm, mask).to_pylist()):
        out[back[n]].append(stored)
    return {v: sorted(x) for v, x in out.items()}

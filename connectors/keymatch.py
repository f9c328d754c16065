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

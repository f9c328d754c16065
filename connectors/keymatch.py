"""Matching subject keys in an Arrow column: the one place that knows the kernel quirks."""

from __future__ import annotations

import array as _array
from typing import Any

# array.array type codes by (bytes, signed): Arrow's fixed-width integer layouts
_INT_CODES = {(1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q",
              (1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q"}
_CODES = {k: c for k, c in _INT_CODES.items() if _array.array(c).itemsize == k[0]}


def array_of(values, typ):
    """`pa.array(values, type=typ)` without importing pandas.

    pyarrow's `pa.array` and `pa.scalar` import pandas (0.5 s, more than a small erasure
    takes) to ask whether the input is a pandas object, even for a list of ints. Integer,
    boolean and string arrays of plain Python values are built here from their buffers
    instead (`Array.from_buffers` asks nothing); anything else, and any value that does not
    fit (a bool among ints, an int too large, a None), goes to `pa.array`, which converts or
    raises exactly as before."""
    import pyarrow as pa

    values = list(values)
    n = len(values)
    try:
        if pa.types.is_integer(typ) and all(type(v) is int for v in values):
            code = _CODES.get((typ.bit_width // 8, pa.types.is_signed_integer(typ)))
            if code is not None:
                return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(_array.array(code,
                                                                                  values))])
        elif pa.types.is_boolean(typ) and all(type(v) is bool for v in values):
            bits = bytearray((n + 7) // 8)
            for i, v in enumerate(values):
                if v:
                    bits[i >> 3] |= 1 << (i & 7)
            return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(bytes(bits))])
        elif (pa.types.is_string(typ) or pa.types.is_large_string(typ)) \
                and all(type(v) is str for v in values):
            data = [v.encode("utf-8") for v in values]
            offsets, at = [0], 0
            for d in data:
                at += len(d)
                offsets.append(at)
            code = "q" if pa.types.is_large_string(typ) else "i"
            if code == "i" and at >= 2 ** 31:
                raise OverflowError
            return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(_array.array(code, offsets)),
                                                  pa.py_buffer(b"".join(data))])
    except (OverflowError, UnicodeEncodeError):
        pass        # out of range, a lone surrogate: pa.array raises its own error for it
    return pa.array(values, type=typ)


def arrow_table(obj):
    """A pyarrow Table of an Arrow C stream (deltalake's arro3 tables and query results).
    Not `pa.table(obj)`: it imports pandas to ask whether `obj` is a DataFrame."""
    import pyarrow as pa

    return pa.RecordBatchReader.from_stream(obj).read_all()


def admitted_row_groups(pf, column: str, sorted_values: list) -> tuple[list[int], int]:
    """The row groups of a Parquet file (a `pq.ParquetFile`, whose footer is read) whose
    min/max statistics for the top-level `column` admit one of `sorted_values`, and how many
    the statistics ruled out. A row group without statistics, or whose statistics cannot be
    compared with the values, is admitted."""
    from bisect import bisect_left

    md = pf.metadata
    leaf = next((i for i in range(md.num_columns) if md.schema.column(i).path == column), None)
    admitted, skipped = [], 0
    for rg in range(md.num_row_groups):
        st = md.row_group(rg).column(leaf).statistics if leaf is not None else None
        if st is not None and st.has_min_max:
            lo, hi = st.min, st.max
            if isinstance(lo, bytes):
                lo, hi = lo.decode("utf-8", "replace"), hi.decode("utf-8", "replace")
            try:
                j = bisect_left(sorted_values, lo)
                if j >= len(sorted_values) or sorted_values[j] > hi:
                    skipped += 1
                    continue
            except TypeError:
                pass
        admitted.append(rg)
    return admitted, skipped


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
    vc = pc.value_counts(comparable(found))      # two columns, not a dict per key
    return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))


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
    wanted = array_of(values, pa.string())
    as_arrow = normalize_arrow(wanted, rule).to_pylist()
    back = {a: v for a, v in zip(as_arrow, wanted.to_pylist())}
    uniq = pc.unique(arr.drop_null() if hasattr(arr, "drop_null") else arr)
    norm = normalize_arrow(uniq, rule)
    mask = pc.is_in(norm, value_set=array_of(back, pa.string()))
    out: dict[str, list[str]] = {v: [] for v in values}
    for stored, n in zip(pc.filter(uniq, mask).to_pylist(), pc.filter(norm, mask).to_pylist()):
        out[back[n]].append(stored)
    return {v: sorted(x) for v, x in out.items()}

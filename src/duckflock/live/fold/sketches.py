"""approx_count_distinct's SKETCH partial in numpy: merged and counted as DuckDB does.

The partial is DuckDB's exported ``approx_count_distinct`` state as a BLOB: DuckDB 1.5's
HyperLogLog (``src/common/types/hyperloglog.cpp``, after Ertl, arXiv:1702.01284) is
``M = 64`` one-byte registers and nothing else, so the BLOB is those 64 bytes. Its
``Merge`` keeps each register's maximum (``Update(i, other.k[i])``): associative,
commutative and idempotent, so the order in which sketches are combined never shows.
``Count`` reads only the histogram ``c`` of the register values (Algorithm 6):

    z = M * tau((M - c[Q]) / M);  for k = Q … 1: z = (z + c[k]) / 2
    z += M * sigma(c[0] / M);     count = llround(ALPHA * M * M / z)

with ``Q = 64 - 6``; every step is one IEEE double operation, the same here. DuckDB's
own merge and count are the oracle: :func:`agrees` checks both against it over
sketches DuckDB built (0 to ~12,000 values, a union of each pair) and random register
histograms, once per process; a plan merges sketches here only if it holds
(:class:`~duckflock.live.fold.merges.Merge`). A sketch of another length, or NULL,
raises ``ValueError``: that fold is DuckDB's.
"""

from __future__ import annotations

import functools
import math
import re

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

M = 64  # registers (P = 6 bits of the hash pick one)
Q = 64 - 6  # a register holds 0 … Q + 1
ALPHA = 0.721347520444481703680  # 1 / (2 ln 2)


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if previous == z:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= math.pow(1.0 - x, 2) * y
        if previous == z:
            return z / 3


# c[0] and c[Q] count registers: 0 … M, so both functions take one of M + 1 arguments
_SIGMA = np.array([M * _sigma(n / M) for n in range(M + 1)])
_TAU = np.array([M * _tau((M - n) / M) for n in range(M + 1)])


def registers(sketches: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The sketches' registers, one row of ``M`` bytes per sketch (a copy)."""
    array = sketches.combine_chunks() if isinstance(sketches, pa.ChunkedArray) else sketches
    if array.null_count:
        raise ValueError("a NULL sketch")
    rows = len(array)
    offsets = np.frombuffer(array.buffers()[1], np.int32, rows + 1, array.offset * 4)
    if rows and not (np.diff(offsets) == M).all():
        raise ValueError("a sketch that is not DuckDB's 64 registers")
    first = int(offsets[0]) if rows else 0
    data = array.buffers()[2]
    values = np.frombuffer(data, np.uint8, rows * M, first) if rows else np.empty(0, np.uint8)
    out = values.reshape(rows, M).copy()
    if rows and int(out.max()) > Q + 1:
        raise ValueError("a register past Q + 1")
    return out


def sketches(values: np.ndarray) -> pa.Array:
    """BLOBs of ``values`` (one row of registers per sketch)."""
    rows = len(values)
    offsets = np.arange(0, (rows + 1) * M, M, dtype=np.int32)
    data = np.ascontiguousarray(values, np.uint8)
    return pa.Array.from_buffers(
        pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


# DuckDB's hash of an integer (MurmurHash64 of its bits, zero-extended to 64: hash(-1)
# of an INTEGER is that of 0xFFFFFFFF; a TINYINT or SMALLINT is an INTEGER's first), as
# hash() and approx_count_distinct compute it (measured: tests/test_distinct.py)
_MURMUR = np.uint64(0xD6E8FEB86659FD93)
_UNSIGNED = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def codes(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Per value, the register DuckDB's ``InsertElement`` raises and to what, as
    ``register * M + rank`` (NULL stays NULL: DuckDB skips it): the hash's low 6 bits
    pick the register; the rank is 1 + the trailing zeros of the rest, capped at Q + 1.
    Integers only (TypeError otherwise); admitted by the partials' probes
    (live/plan/computing.py) against DuckDB's sketches of the same rows."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not pa.types.is_integer(array.type):
        raise TypeError(f"no hash of {array.type} here")
    width = array.type.bit_width
    # frombuffer's offset is in bytes, an array's in values
    bits = np.frombuffer(
        array.buffers()[1], _UNSIGNED[width], len(array), array.offset * width // 8
    )
    if width < 32 and pa.types.is_signed_integer(array.type):  # as an INTEGER's bits
        bits = bits.view(f"int{width}").astype(np.int32).view(np.uint32)
    h = bits.astype(np.uint64)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(32)
        h *= _MURMUR
        h ^= h >> np.uint64(32)
        h *= _MURMUR
        h ^= h >> np.uint64(32)
    register = (h & np.uint64(M - 1)).astype(np.uint16)
    rest = (h >> np.uint64(6)) | np.uint64(1 << Q)
    lowest = rest & (~rest + np.uint64(1))  # the lowest set bit, a power of two
    rank = np.frexp(lowest.astype(np.float64))[1].astype(np.uint16)  # its exponent + 1
    mask = None if not array.null_count else pc.is_null(array).to_numpy(zero_copy_only=False)
    return pa.array(register * M + rank, pa.uint16(), mask=mask)


def gathered(lists: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Per group, the sketch of its :func:`codes` (a list of them, each at most once)."""
    array = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    parents = pc.list_parent_indices(array).to_numpy()
    flat = pc.list_flatten(array).to_numpy().astype(np.int64)
    out = np.zeros(len(array) * M, np.uint8)
    np.maximum.at(out, parents * M + flat // M, (flat % M).astype(np.uint8))
    return sketches(out.reshape(len(array), M))


def merge(old: pa.ChunkedArray | pa.Array, new: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Row by row, the sketch of both rows' values: each register's maximum."""
    return sketches(np.maximum(registers(old), registers(new)))


def count(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``approx_count_distinct`` of each sketch (DuckDB's ``finalize``), as BIGINT."""
    return pa.array(_counts(registers(values)), pa.int64())


class Counted:
    """Per output, the sketches last counted and their counts: a sketch's count depends
    on its registers alone, so a refresh counts only the sketches whose registers differ
    from the ones at the same row last time (a merge keeps the touched groups' order)."""

    KEPT = 1 << 16  # sketches past which none are kept (their registers: 64 bytes each)

    def __init__(self) -> None:
        self._last: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def count(self, values: pa.ChunkedArray | pa.Array, output: int) -> pa.Array:
        """:func:`count` of ``values``, the sketches of output ``output``."""
        regs = registers(values)
        last = self._last.get(output)
        if last is None:
            counts = _counts(regs)
        else:
            kept = min(len(regs), len(last[0]))
            changed = np.ones(len(regs), bool)
            changed[:kept] = (regs[:kept] != last[0][:kept]).any(axis=1)
            counts = np.empty(len(regs), np.int64)  # (the kept counts are never written)
            counts[:kept] = last[1][:kept]
            if changed.any():
                counts[changed] = _counts(regs[changed])
        if len(regs) <= self.KEPT:
            self._last[output] = (regs, counts)
        else:
            self._last.pop(output, None)
        return pa.array(counts, pa.int64())


def _counts(registers: np.ndarray) -> np.ndarray:
    """:func:`count` of each row of ``registers``."""
    regs = registers.astype(np.int64)
    rows = len(regs)
    if not rows:
        return np.empty(0, np.int64)
    # c[v]: how many of a sketch's registers hold v (a row of Q + 2 per sketch)
    where = regs + (Q + 2) * np.arange(rows, dtype=np.int64)[:, None]
    c = np.bincount(where.ravel(), minlength=rows * (Q + 2)).reshape(rows, Q + 2)
    z = _TAU[c[:, Q]]
    # a step whose c[k] is 0 in every sketch only halves z (z + 0 is z): such runs are
    # one product by a power of two, exact as each halving (z is 0 or far from subnormal)
    halvings = 0
    held: list[bool] = np.any(c[:, Q:0:-1], axis=0).tolist()  # per k from Q down to 1
    for k, held_k in zip(range(Q, 0, -1), held, strict=True):
        if held_k:
            z = (z * 0.5**halvings + c[:, k]) * 0.5 if halvings else (z + c[:, k]) * 0.5
            halvings = 0
        else:
            halvings += 1
    z = z * 0.5**halvings
    z = z + _SIGMA[c[:, 0]]
    with np.errstate(divide="ignore"):
        estimate = (ALPHA * M * M) / z  # an empty sketch: z is infinite, the count 0
    if not np.isfinite(estimate).all():  # z = 0: every register at Q or past it
        raise ValueError("a sketch DuckDB's count leaves undefined")
    whole = np.floor(estimate)  # llroundl: halves away from zero (all are >= 0)
    counted: np.ndarray = (whole + (estimate - whole >= 0.5)).astype(np.int64)
    return counted


# approx_count_distinct's output over its SKETCH partial, as fold/states.py writes it
_COUNTED = re.compile(
    r"finalize\(combine\(\(SELECT approx_count_distinct\(CAST\(NULL AS [^()]+(?:\([^()]*\))?\)\)"
    r" EXPORT_STATE\), __p(\d+)\)\)"
)


def counted(text: str) -> int | None:
    """The partial whose sketch the output SQL ``text`` counts, if that is all it does."""
    found = _COUNTED.fullmatch(text)
    return int(found[1]) if found else None


@functools.cache
def agrees() -> bool:
    """Whether :func:`merge` and :func:`count` give DuckDB's own sketches and counts:
    over sketches DuckDB built of 0 to ~12,000 values each, the union of each pair of
    them, and random register histograms, asked of a fresh in-memory DuckDB (the
    HyperLogLog is the library's, the same in every instance)."""
    con = duckdb.connect()
    try:
        return _agrees(con)
    except (duckdb.Error, ValueError, pa.ArrowException):
        return False
    finally:
        con.close()


# the empty state combine() starts from (the argument's type does not change a sketch)
_EMPTY = "(SELECT approx_count_distinct(CAST(NULL AS BIGINT)) EXPORT_STATE)"


def _agrees(con: duckdb.DuckDBPyConnection) -> bool:
    con.execute("SET threads = 1")
    # group g holds floor(1.3 ** g) values (g = 37: none, all NULL); pair g // 2 both
    rows = (
        "SELECT g, CASE WHEN g < 37 THEN g * 1000003 + s END AS x "
        "FROM range(38) t(g), range(greatest(floor(pow(1.3, least(g, 36)))::BIGINT, 1)) u(s)"
    )
    state = (
        "CAST(approx_count_distinct(x) EXPORT_STATE AS BLOB) AS b, approx_count_distinct(x) AS n"
    )
    groups = con.execute(f"SELECT g, {state} FROM ({rows}) GROUP BY g ORDER BY g").to_arrow_table()
    pairs = con.execute(
        f"SELECT g // 2 AS g, {state} FROM ({rows}) GROUP BY g // 2 ORDER BY 1"
    ).to_arrow_table()
    if count(groups["b"]).to_pylist() != groups["n"].to_pylist():
        return False
    regs = registers(groups["b"])
    if not sketches(np.maximum(regs[0::2], regs[1::2])).equals(pairs["b"].combine_chunks()):
        return False
    # histograms no small probe reaches (high registers), counted by DuckDB's finalize:
    # each row's registers drawn up to its own ceiling, and each value in every register
    draw = np.random.default_rng(21)
    ceilings = draw.integers(1, Q + 2, (256, 1))
    drawn = np.vstack(
        [
            draw.integers(0, Q + 2, (256, M)) % (ceilings + 1),
            np.arange(Q)[:, None] + np.zeros(M, np.int64),
        ]
    )
    __duckflock_sketches = pa.table({"b": sketches(drawn.astype(np.uint8))})
    counted = con.execute(
        f"SELECT finalize(combine({_EMPTY}, b)) AS n FROM __duckflock_sketches"
    ).to_arrow_table()
    return bool(count(__duckflock_sketches["b"]).to_pylist() == counted["n"].to_pylist())

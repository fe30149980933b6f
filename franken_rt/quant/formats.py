"""Numpy codecs of the block formats, one `CODECS` row per quantized format (byte layouts are ggml's, or ours from
id 1000 up; csrc/kernels/formats.h defines them for the core, franken_rt/formats.py states their facts).

Decoding and round-to-nearest encoding of ggml's types use the `gguf` package's reference implementation.
`search` encodes into the same standard blocks with error-minimizing scales (and minimums), so files stay readable
by llama.cpp. Q3_0 is franken-rt's own 3-bit format (layout in csrc/kernels/formats.h), so its codec is here.
A format's grid (level table, per-block scale fit, packer) lets error-feedback rounding (franken_rt.quant.gptq)
choose each element's code itself: see `Codec`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import gguf
import numpy as np

from franken_rt.formats import DType, format_of

QK = 32
ROUNDINGS = ("rtn", "search", "gptq")  # gptq needs calibration (quant.gptq); without it, encode() searches
_CHUNK_BLOCKS = 1 << 16  # blocks optimized at once: bounds the search's temporaries to a few tens of MB


@dataclass(frozen=True)
class Codec:
    """One quantized format's numpy codec. `decode`: stored bytes (..., whole blocks) -> float32 (blocks, 32).
    `rtn`: float32 (blocks, 32) -> bytes (blocks, block bytes), round-to-nearest as ggml's reference quantizers.
    `search`: the same blocks with error-minimizing scales, weighted per element (None: rtn only).

    The grid, for error-feedback rounding (franken_rt.quant.gptq: it fixes a block's header first, then picks each
    element's code in turn, so a code need not be the one nearest the original value). Element = d * levels[code] + m.
    `levels`: the level of each stored code, indexed by the code (any order): shape (codes,), or (sets, codes) for a
      format whose blocks each select one of several level sets.
    `fit(x, w)`: (blocks, 32) values and non-negative per-element weights -> params (blocks, 2), or (blocks, 3) with
      several level sets: the block's scale d, its minimum m (0 where the format has none) and the set's index,
      each as stored (f16-rounded scales), chosen to minimize the w-weighted squared error (the format's search).
    `pack(params, codes)`: params and (blocks, 32) integer codes -> stored bytes (blocks, block bytes).
    `nearest` and `values` follow from `levels`. A format has a grid when all three are given (`has_grid`)."""

    decode: Callable[[np.ndarray], np.ndarray]
    rtn: Callable[[np.ndarray], np.ndarray]
    search: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    levels: tuple[float, ...] | tuple[tuple[float, ...], ...] | None = None
    fit: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    pack: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    @property
    def has_grid(self) -> bool:
        return self.levels is not None and self.fit is not None and self.pack is not None

    @cached_property
    def _sets(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per level set: its table, the codes in ascending level order, the midpoints between sorted levels."""
        out = []
        for table in np.atleast_2d(np.asarray(self.levels, dtype=np.float32)):
            order = np.argsort(table, kind="stable")
            out.append((table, order, (table[order][1:] + table[order][:-1]) / 2))
        return out

    def nearest(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Codes (blocks, n) of the levels nearest x (blocks, n), row i on block params[i] (0 scale: level 0)."""
        d, m = params[:, :1], params[:, 1:2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(d != 0, (x - m) / d, 0)
        if len(self._sets) == 1:
            _, order, edges = self._sets[0]
            return order[np.searchsorted(edges, t)]
        codes = np.zeros(t.shape, dtype=np.int64)
        for s, (_, order, edges) in enumerate(self._sets):
            rows = params[:, 2] == s
            codes[rows] = order[np.searchsorted(edges, t[rows])]
        return codes

    def values(self, codes: np.ndarray, params: np.ndarray) -> np.ndarray:
        """The values (blocks, n) that codes (blocks, n) stand for on block params (blocks, 2 or 3)."""
        if len(self._sets) == 1:
            lv = self._sets[0][0][codes]
        else:
            lv = np.stack([t for t, _, _ in self._sets])[params[:, 2].astype(np.int64)[:, None], codes]
        return params[:, :1] * lv + params[:, 1:2]


def _ggml_decode(dtype: DType) -> Callable[[np.ndarray], np.ndarray]:
    """The `gguf` package's reference decoder of one of ggml's types."""
    return lambda raw: np.asarray(gguf.quants.dequantize(np.asarray(raw), gguf.GGMLQuantizationType(int(dtype))),
                                  dtype=np.float32).reshape(-1, QK)


def _ggml_rtn(dtype: DType) -> Callable[[np.ndarray], np.ndarray]:
    """The `gguf` package's reference round-to-nearest encoder of one of ggml's types. It loops in Python over
    groups of 16 rows, so the (blocks, 32) input is handed over as rows of up to 256 blocks (each block is encoded
    on its own: the bytes are the same, ten times faster than rows of one block)."""
    qtype = gguf.GGMLQuantizationType(int(dtype))

    def rtn(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        per_row = math.gcd(n, 256)
        return np.asarray(gguf.quants.quantize(x.reshape(n // per_row, per_row * QK), qtype)).reshape(n, -1)

    return rtn


def dequantize(raw: np.ndarray, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    """Stored bytes (rows, bytes per row) of a tensor -> float32 array of `shape`."""
    if dtype in CODECS:
        return CODECS[dtype].decode(np.asarray(raw)).reshape(shape)
    out = gguf.quants.dequantize(np.asarray(raw), gguf.GGMLQuantizationType(int(dtype)))
    return np.asarray(out, dtype=np.float32).reshape(shape)


def quantize(x: np.ndarray, dtype: DType) -> np.ndarray:
    """float32 (rows, cols) -> stored bytes (rows, bytes per row), round-to-nearest as ggml's reference."""
    x = np.asarray(x, dtype=np.float32)
    if dtype in CODECS:
        return CODECS[dtype].rtn(x.reshape(-1, QK)).reshape(*x.shape[:-1], -1)
    return np.asarray(gguf.quants.quantize(x, gguf.GGMLQuantizationType(int(dtype))))


def random_blocks(dtype: DType, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Stored bytes (rows, bytes per row) of a random matrix in any quantized format, written or only read: random
    codes (and sub-block scales), f16 scales in [0.01, 0.03) and minimums in (-0.1, 0], divided by 64 where random
    integer sub-block scales (the K-quants') multiply them. Tests of read-only formats use it, and benchmarks at
    sizes where quantizing real floats would take longer than what they measure."""
    f = format_of(dtype)
    raw = rng.integers(0, 256, size=(rows, cols // f.block_elems, f.block_bytes), dtype=np.uint8)
    sub = 64.0 if f.block_elems > QK else 1.0
    halves = [(0.01 + 0.02 * rng.random((rows, cols // f.block_elems))) / sub]
    if f.header_halves > 1:  # a minimum after the scale
        halves.append(-0.1 * rng.random((rows, cols // f.block_elems)) / sub)
    for i, h in enumerate(halves):
        at = f.header_at + 2 * i
        raw[:, :, at:at + 2] = h.astype("<f2").view(np.uint8).reshape(rows, -1, 2)
    return raw.reshape(rows, -1)


def encode(x: np.ndarray, dtype: DType, rounding: str = "rtn", importance: np.ndarray | None = None) -> np.ndarray:
    """float array -> its bytes in `dtype` (any storage type), shape (rows..., bytes per row).

    `importance` (one non-negative weight per column, e.g. the mean squared input the matrix multiplies, see
    franken_rt.surgery.importance): the search then minimizes the error weighted by it, so the columns that carry
    large inputs are rounded more carefully. Round-to-nearest ignores it."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == DType.F32:
        return x.view(np.uint8)
    if dtype == DType.F16:
        return x.astype("<f2").view(np.uint8)
    search = CODECS[dtype].search if dtype in CODECS else None
    if rounding in ("search", "gptq") and search is not None:  # gptq without second moments: the weighted search
        rows = x.reshape(-1, x.shape[-1])
        blocks = rows.reshape(-1, QK)
        per_row = x.shape[-1] // QK
        if importance is None:
            col = np.ones((per_row, QK), dtype=np.float32)
        else:
            imp = np.asarray(importance, dtype=np.float64).reshape(per_row, QK)
            col = (imp / max(float(imp.mean()), 1e-30) + 1e-6).astype(np.float32)  # no column weighs zero
        step = max(1, _CHUNK_BLOCKS // per_row) * per_row  # whole rows, so each block meets its columns
        out = [search(blocks[i:i + step], np.tile(col, (len(blocks[i:i + step]) // per_row, 1)))
               for i in range(0, len(blocks), step)]
        return np.concatenate(out).reshape(*x.shape[:-1], -1)
    return quantize(x, dtype)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(blocks, 32) values 0..15 -> (blocks, 16) bytes: element j in the low nibble of byte j, j+16 in the high."""
    q = q.astype(np.uint8)
    return q[:, :16] | (q[:, 16:] << 4)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    return v.astype("<f2").reshape(-1, 1).view(np.uint8)


def _symmetric_scales(x: np.ndarray, w: np.ndarray, bits: int) -> np.ndarray:
    """Scales d of blocks valued d * k, k in [-2^(bits-1), 2^(bits-1) - 1], that minimize the squared error
    weighted by w (same shape as x).

    Candidates: the extreme value mapped to each level near the ends of the range, then each refitted by least
    squares for its rounding; the best (after the scale is rounded to f16) wins.
    """
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    idx = np.abs(x).argmax(axis=1)
    extreme = x[np.arange(len(x)), idx]  # signed value of largest magnitude
    best_err = np.full(len(x), np.inf, dtype=np.float32)
    best_d = np.zeros(len(x), dtype=np.float32)
    for level in (lo - 0.5, lo, lo + 0.5, lo + 1, hi, hi + 0.5):
        d = extreme / level
        for refit in (False, True):
            q = _symmetric_levels(x, d, bits)
            if refit:  # weighted least-squares scale for this rounding
                num, den = (w * x * q).sum(axis=1), (w * q * q).sum(axis=1)
                d = np.where(den > 0, num / np.maximum(den, 1e-30), d)
            d16 = d.astype(np.float16).astype(np.float32)
            err = (w * (x - d16[:, None] * _symmetric_levels(x, d16, bits)) ** 2).sum(axis=1)
            better = err < best_err
            best_err, best_d = np.where(better, err, best_err), np.where(better, d16, best_d)
    return best_d


def _symmetric_fit(bits: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The grid's fit of a symmetric format (value = d * k): the search's scale, minimum 0."""
    return lambda x, w: _params(_symmetric_scales(x, w, bits))


def _params(d: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    """Grid params (blocks, 2): scale and minimum (0 where the format has none)."""
    return np.stack([d, np.zeros_like(d) if m is None else m], axis=1).astype(np.float32)


def _symmetric_levels(x: np.ndarray, d: np.ndarray, bits: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d[:, None] != 0, np.rint(x / d[:, None]), 0)
    return np.clip(q, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def _q4_0_search(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (value = d * (q - 8), q in 0..15) with the error-minimizing scale."""
    d = _symmetric_scales(x, w, 4)
    return np.concatenate([_f16_bytes(d), _pack_nibbles(_symmetric_levels(x, d, 4) + 8)], axis=1)


def _q3_0_search(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Q3_0 blocks (value = d * (q - 4), q in 0..7) with the error-minimizing scale."""
    d = _symmetric_scales(x, w, 3)
    return _q3_0_pack(d, _symmetric_levels(x, d, 3) + 4)


def _q3_0_rtn(x: np.ndarray) -> np.ndarray:
    """Q3_0 by round-to-nearest, as ggml's Q4_0 reference does for 4 bits: the value of largest magnitude maps to
    the end code -4 and the rest round to the nearest level."""
    extreme = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
    d = (extreme / -4).astype(np.float16).astype(np.float32)
    return _q3_0_pack(d, _symmetric_levels(x, d, 3) + 4)


def _q3_0_pack(d: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Scales (blocks,) and codes (blocks, 32) in 0..7 -> (blocks, 14) bytes: f16 d, the high bits (bit j of the
    4 little-endian bytes is element j's), the low pairs (element j at bits 2*(j//8) of byte j % 8)."""
    q = q.astype(np.uint8)
    qh = np.packbits(q >> 2, axis=1, bitorder="little")
    return np.concatenate([_f16_bytes(d), qh, _pack_low_planes(q)], axis=1)


def _pack_low_planes(q: np.ndarray) -> np.ndarray:
    """(blocks, 32) codes -> (blocks, 8) bytes of their low two bits (element j at bits 2*(j//8) of byte j % 8)."""
    lo = q.astype(np.uint8) & 3
    qs = np.zeros((len(q), 8), dtype=np.uint8)
    for k in range(4):
        qs |= lo[:, 8 * k:8 * k + 8] << (2 * k)
    return qs


def _q3_codes(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q3_0 or Q3_NL bytes (..., multiple of 14) -> scales (blocks, 1) and codes (blocks, 32) 0..7."""
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, 14)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    hi = np.unpackbits(blocks[:, 2:6], axis=1, bitorder="little")
    return d, _low_planes(blocks[:, 6:14]) | (hi << 2)


def _low_planes(qs: np.ndarray) -> np.ndarray:
    """(blocks, 8) bytes of 2-bit planes -> (blocks, 32) codes 0..3 (element j at bits 2*(j//8) of byte j % 8)."""
    lo = (qs[:, None, :] >> (2 * np.arange(4, dtype=np.uint8))[None, :, None]) & 3
    return lo.reshape(-1, QK)


def _q3_0_decode(raw: np.ndarray) -> np.ndarray:
    """Q3_0 bytes (..., multiple of 14) -> float32 values (blocks, 32)."""
    d, q = _q3_codes(raw)
    return d * (q.astype(np.float32) - 4)


def _q4_1_search(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Q4_1 blocks (value = d * q + m, q in 0..15) minimizing the squared error weighted by w."""
    p = _q4_1_fit(x, w)
    return _q4_1_pack(p, _q4_1_levels(x, p[:, 0], p[:, 1]))


def _q4_1_pack(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.concatenate([_f16_bytes(p[:, 0]), _f16_bytes(p[:, 1]), _pack_nibbles(q)], axis=1)


def _q4_1_fit(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Q4_1's (d, m) per block minimizing the squared error weighted by w: from several starting ranges, alternate
    rounding and a weighted least-squares fit of (d, m)."""
    lo, hi = x.min(axis=1), x.max(axis=1)
    best_err = np.full(len(x), np.inf, dtype=np.float32)
    best_d, best_m = np.zeros_like(lo), lo.copy()
    for shrink in (1.0, 0.95, 0.9, 0.85):
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * shrink
        m, d = mid - half, 2 * half / 15
        for _ in range(4):
            q = _q4_1_levels(x, d, m)
            # normal equations of min sum w (x - d q - m)^2 over (d, m)
            n, sq, sqq = w.sum(axis=1), (w * q).sum(axis=1), (w * q * q).sum(axis=1)
            sx, sxq = (w * x).sum(axis=1), (w * x * q).sum(axis=1)
            det = n * sqq - sq * sq
            ok = det > 0
            d = np.where(ok, (n * sxq - sq * sx) / np.where(ok, det, 1), d)
            m = np.where(ok, (sx - d * sq) / n, m)
        d16 = d.astype(np.float16).astype(np.float32)
        m16 = m.astype(np.float16).astype(np.float32)
        err = (w * (x - d16[:, None] * _q4_1_levels(x, d16, m16) - m16[:, None]) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_d, best_m = np.where(better, d16, best_d), np.where(better, m16, best_m)
    return _params(best_d, best_m)


def _q4_1_levels(x: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d[:, None] > 0, np.rint((x - m[:, None]) / d[:, None]), 0)
    return np.clip(q, 0, 15)


class Codebook:
    """Scales and codes of a codebook format (value = d * levels[code]; IQ4_NL, Q3_NL, Q2_NL): its levels are the
    registry row's codebook."""

    def __init__(self, dtype: DType) -> None:
        self.levels = np.array(format_of(dtype).codebook, dtype=np.float32)
        self.order = np.argsort(self.levels, kind="stable")
        ranked = self.levels[self.order]
        self.edges = (ranked[1:] + ranked[:-1]) / 2
        self.low, self.high = float(ranked[0]), float(ranked[-1])
        # With integer levels every edge (a midpoint) is a multiple of 1/2, and t <= edge exactly when ceil(2t) <=
        # 2 * edge: the code of t is then a table lookup at ceil(2t), the same as the binary search but several times
        # faster (the search calls index() some 45 times per tensor).
        twice = 2 * self.edges
        self.table: np.ndarray | None = None
        if np.array_equal(twice, np.round(twice)):
            self.first = int(twice[0])
            self.table = self.order[np.searchsorted(twice, np.arange(self.first, int(twice[-1]) + 2), side="left")]
            self.level_table = self.levels[self.table]

    def index(self, x: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Code of the level nearest x / d for each element: (blocks, 32) (level 0's code where d is 0; x and d are
        finite, as the converter has checked)."""
        return self._lookup(x, d, levels=False)

    def level(self, x: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The level nearest x / d for each element (levels[index(x, d)] in one lookup)."""
        return self._lookup(x, d, levels=True)

    def _lookup(self, x: np.ndarray, d: np.ndarray, levels: bool) -> np.ndarray:
        with np.errstate(over="ignore"):  # a tiny d: x / d is +-inf, an end level (and x / inf is 0 where d is 0)
            t = x / np.where(d == 0, np.float32(np.inf), d)[:, None]
        if self.table is None:
            code = self.order[np.searchsorted(self.edges, t)]
            return self.levels[code] if levels else code
        with np.errstate(over="ignore"):  # |t| near float32's limit: +-inf, the end levels
            u = np.ceil(2 * t)
        np.clip(u, self.first, self.first + len(self.table) - 1, out=u)
        return (self.level_table if levels else self.table)[u.astype(np.intp) - self.first]

    def rtn_scales(self, x: np.ndarray) -> np.ndarray:
        """The value of largest magnitude on the level of largest magnitude."""
        end = self.low if -self.low >= self.high else self.high
        extreme = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
        return (extreme / end).astype(np.float16).astype(np.float32)

    def scales(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The scale per block minimizing the squared error weighted by w: the extreme value mapped near either end
        of the level set at several scales, each rounding refitted by weighted least squares, the best after f16
        rounding."""
        extreme = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
        best_err = np.full(len(x), np.inf, dtype=np.float32)
        best_d = np.zeros(len(x), dtype=np.float32)
        for level in (*(self.low * np.linspace(1.07, 0.88, 9)), *(self.high * np.linspace(0.92, 1.1, 6))):
            d = extreme / level
            for refit in (False, True):
                if refit:
                    v = self.level(x, d)
                    num, den = (w * x * v).sum(axis=1), (w * v * v).sum(axis=1)
                    d = np.where(den > 0, num / np.maximum(den, 1e-30), d)
                d16 = d.astype(np.float16).astype(np.float32)
                err = (w * (x - d16[:, None] * self.level(x, d16)) ** 2).sum(axis=1)
                better = err < best_err
                best_err, best_d = np.where(better, err, best_err), np.where(better, d16, best_d)
        return best_d

    def codec(self, decode_codes: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
              pack: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Codec:
        """The format's codec row, given its layout: bytes -> (scales (blocks, 1), codes), (scales, codes) -> bytes."""

        def decode(raw: np.ndarray) -> np.ndarray:
            d, q = decode_codes(raw)
            return d * self.levels[q]

        def rtn(x: np.ndarray) -> np.ndarray:
            d = self.rtn_scales(x)
            return pack(d, self.index(x, d))

        def search(x: np.ndarray, w: np.ndarray) -> np.ndarray:
            d = self.scales(x, w)
            return pack(d, self.index(x, d))

        return Codec(decode, rtn, search, levels=tuple(float(v) for v in self.levels),
                     fit=lambda x, w: _params(self.scales(x, w)), pack=lambda p, q: pack(p[:, 0], q))


def _iq4_nl_codes(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, 18)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    return d, np.concatenate([blocks[:, 2:] & 15, blocks[:, 2:] >> 4], axis=1)


def _iq4_nl_pack(d: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.concatenate([_f16_bytes(d), _pack_nibbles(idx)], axis=1)


def _q2_nl_codes(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, 10)
    return blocks[:, :2].copy().view("<f2").astype(np.float32), _low_planes(blocks[:, 2:])


def _q2_nl_pack(d: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.concatenate([_f16_bytes(d), _pack_low_planes(q)], axis=1)


def _q8_0_pack(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.concatenate([_f16_bytes(p[:, 0]), (q - 128).astype(np.int8).view(np.uint8)], axis=1)


def _levels(first: int, n: int) -> tuple[float, ...]:
    """Levels of codes 0..n-1 of a linear format: code c stands for first + c."""
    return tuple(float(v) for v in range(first, first + n))


# One row per quantized format of the registry (franken_rt/formats.py); tests/test_formats.py checks none is missing.
CODECS: dict[DType, Codec] = {
    DType.Q8_0: Codec(_ggml_decode(DType.Q8_0), _ggml_rtn(DType.Q8_0), levels=_levels(-128, 256),
                      fit=_symmetric_fit(8), pack=_q8_0_pack),
    DType.Q4_0: Codec(_ggml_decode(DType.Q4_0), _ggml_rtn(DType.Q4_0), _q4_0_search, levels=_levels(-8, 16),
                      fit=_symmetric_fit(4), pack=lambda p, q: np.concatenate([_f16_bytes(p[:, 0]),
                                                                               _pack_nibbles(q)], axis=1)),
    DType.Q4_1: Codec(_ggml_decode(DType.Q4_1), _ggml_rtn(DType.Q4_1), _q4_1_search, levels=_levels(0, 16),
                      fit=_q4_1_fit, pack=_q4_1_pack),
    DType.Q3_0: Codec(_q3_0_decode, _q3_0_rtn, _q3_0_search, levels=_levels(-4, 8), fit=_symmetric_fit(3),
                      pack=lambda p, q: _q3_0_pack(p[:, 0], q)),
    DType.IQ4_NL: Codebook(DType.IQ4_NL).codec(_iq4_nl_codes, _iq4_nl_pack),
    DType.Q3_NL: Codebook(DType.Q3_NL).codec(_q3_codes, _q3_0_pack),
    DType.Q2_NL: Codebook(DType.Q2_NL).codec(_q2_nl_codes, _q2_nl_pack),
}

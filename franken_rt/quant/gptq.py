"""Error-feedback rounding (the GPTQ family): quantize a matrix's columns in order, and spread each column's rounding
error over the columns not yet quantized, weighted by how the inputs correlate, so the matrix's output error on
the calibration inputs is what gets minimized rather than each weight's own error.

Output error of W (rows, cols) rounded to W' on inputs X: ||(W - W') X||^2 = sum over rows of e H e^T, with
H = E[x x^T] the inputs' second moments (cols x cols, measured by franken_rt.surgery.importance). Rounding column j
to its level leaves error e_j; the best change of the later columns given that error is -e_j Hinv[j, later] /
Hinv[j, j] (Hinv the inverse of H restricted to the columns not yet quantized). With U the upper Cholesky factor of
the (damped) inverse, row j of U holds exactly those ratios for every step at once, so one factorization serves
the whole matrix.

Blocks of the format (32 consecutive columns of a row) share a header (scale, minimum): when the walk reaches a
block, its header is fitted to the current, error-updated weights by the format's own scale search (Codec.fit),
weighted by each column's mean squared input, then the block's columns are rounded one at a time to the
nearest level under that fixed header. Updates inside a block are applied at once per column; the rest of the
matrix is updated once per block (lazy batch), a matrix product.
"""

from __future__ import annotations

import numpy as np

from franken_rt.formats import DType
from franken_rt.quant.formats import CODECS, QK, Codec

# damping added to H's diagonal, relative to its mean. GPTQ's usual 1% overfits the demo model's 8 calibration
# windows (2040 positions for ffn_down's 1536 columns): on held-out text its ffn_down output error was no better than
# the search's; 10% lowered it 13% (blk.10, 20, q3_0) while keeping attn_v's gain (-40%).
DAMP = 0.1
ROW_CHUNK = 8192     # rows processed at once: rows are independent, so this only bounds memory


def has_grid(dtype: DType) -> bool:
    """Whether error-feedback rounding can write `dtype` (its codec exposes levels, a scale fit and a packer)."""
    return dtype in CODECS and CODECS[dtype].has_grid


def inverse_factor(hessian: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """Upper Cholesky factor U (cols, cols) of the damped inverse of H: Hinv = U^T U. Columns that never saw an
    input (zero diagonal) get a unit diagonal: their error then spreads nowhere and they round on their own."""
    h = np.array(hessian, dtype=np.float64)
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, :] = 0
    h[:, dead] = 0
    mean = float(diag[~dead].mean()) if (~dead).any() else 1.0
    h[np.diag_indices_from(h)] = np.where(dead, mean, diag) + damp * mean
    # one factorization: with J the order reversal, J H J = L L^T gives H = R R^T with R = J L J upper, so
    # Hinv = R^-T R^-1 and U = R^-1 (upper, positive diagonal: the Cholesky factor, which is unique)
    lower = np.linalg.cholesky(h[::-1, ::-1])
    return np.linalg.inv(lower[::-1, ::-1])


def gptq_encode(w: np.ndarray, dtype: DType, hessian: np.ndarray, damp: float = DAMP,
                factor: np.ndarray | None = None) -> np.ndarray:
    """float (rows, cols) -> stored bytes (rows, bytes per row) in `dtype`, by error-feedback rounding against the
    inputs' second moments `hessian` (cols, cols). cols must be a multiple of 32 (as every block format's).
    `factor`: inverse_factor(hessian, damp) if already computed (matrices that share an input share it)."""
    codec = CODECS[dtype]
    if not codec.has_grid:
        raise ValueError(f"{dtype.name} has no grid for error-feedback rounding")
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    if cols % QK or hessian.shape != (cols, cols):
        raise ValueError(f"need cols % {QK} == 0 and H of ({cols}, {cols}), got {w.shape} and {hessian.shape}")
    u = inverse_factor(hessian, damp) if factor is None else factor
    # the header search weighs each column by its mean squared input, H's diagonal, as the weighted search does
    # (weighing by the inverse-Hessian cost 1 / U[j, j]^2 instead measured the same within 1% on correlated inputs)
    diag = np.maximum(np.diag(np.asarray(hessian, dtype=np.float64)), 0)
    weight = (diag / max(float(diag.mean()), 1e-30) + 1e-6).astype(np.float32).reshape(-1, QK)
    out = [_encode_rows(w[i:i + ROW_CHUNK], codec, u, weight) for i in range(0, rows, ROW_CHUNK)]
    return np.concatenate(out)


def _encode_rows(w: np.ndarray, codec: Codec, u: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """One chunk of rows: the column walk, block by block; returns the packed rows."""
    rows, cols = w.shape
    w = w.copy()
    u32 = u.astype(np.float32)
    params, codes = [], np.empty((rows, cols), dtype=np.int64)
    for s in range(0, cols, QK):
        e = s + QK
        block = w[:, s:e].copy()  # contiguous: the column updates below touch only it
        p = codec.fit(block, np.broadcast_to(weight[s // QK], block.shape))
        params.append(p)
        err = np.empty((rows, QK), dtype=np.float32)
        for j in range(QK):
            c = s + j
            col = block[:, j:j + 1]
            code = codec.nearest(col, p)
            codes[:, c:c + 1] = code
            err[:, j:j + 1] = (col - codec.values(code, p)) / u32[c, c]
            if j + 1 < QK:
                block[:, j + 1:] -= err[:, j:j + 1] * u32[c, c + 1:e]
        if e < cols:
            w[:, e:] -= err @ u32[s:e, e:]
    # params[b] is (rows, P) for column block b: the stored order is row-major, block b of row r at r * blocks + b
    p_all = np.stack(params, axis=1).reshape(rows * (cols // QK), -1)
    raw = codec.pack(p_all, codes.reshape(-1, QK))
    return raw.reshape(rows, -1)


def output_error(w: np.ndarray, w_hat: np.ndarray, hessian: np.ndarray) -> float:
    """||(W - W') X||^2 per input position: trace((W - W') H (W - W')^T), what error-feedback rounding minimizes."""
    d = np.asarray(w, dtype=np.float64) - np.asarray(w_hat, dtype=np.float64)
    return float(np.einsum("ij,jk,ik->", d, np.asarray(hessian, dtype=np.float64), d))

"""ModelConfig.inv_freq (plain Python, so that generation does not import numpy) against the numpy formula it
replaced, for many RoPE settings.

Every step but one is bit-identical: the float32 divisions and the float64 Llama 3 scaling. The one that differs is
the float32 power theta ** (2i / head_dim): inv_freq rounds the float64 power once (the correctly rounded float32
value), numpy's float32 power is within 1 ulp of it (its SIMD loop on AVX512 machines is off by 1 ulp for ~20% of
the values here). So the test compares with the old formula whose power is replaced by that correctly rounded one
(equal), and checks numpy's power against it (at most 1 ulp apart).
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from franken_rt.config import Llama3RopeScaling, ModelConfig

THETAS = [10000.0, 100000.0, 500000.0, 1e6, 5e6, 1234.5, 2.0, 1e11]
HEAD_DIMS = [2, 16, 48, 64, 80, 128, 256]
SCALINGS = [
    None,
    Llama3RopeScaling(8.0, 1.0, 4.0, 8192),  # Llama 3.1
    Llama3RopeScaling(32.0, 1.0, 4.0, 8192),  # Llama 3.2
    Llama3RopeScaling(8.0, 1.0, 4.0, 32),  # the tiny test models': most frequencies in the blended band
]


def configs() -> list[ModelConfig]:
    rng = random.Random(0)
    thetas = THETAS + [10 ** rng.uniform(0.5, 11.5) for _ in range(12)]
    out = []
    for theta, head_dim, scaling, with_factors in itertools.product(thetas, HEAD_DIMS, SCALINGS, (False, True)):
        factors = tuple(rng.uniform(0.5, 40.0) for _ in range(head_dim // 2)) if with_factors else None
        out.append(ModelConfig(n_layers=1, dim=64, n_heads=1, n_kv_heads=1, head_dim=head_dim, ffn_dim=64,
                               vocab_size=10, context_length=10, norm_eps=1e-5, rope_theta=theta,
                               tie_embeddings=True, rope_scaling=scaling, rope_freq_factors=factors))
    return out


def exponents(c: ModelConfig) -> np.ndarray:
    """2i / head_dim in float32, as the old code (and transformers) computed them."""
    return np.arange(0, c.head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(c.head_dim)


def numpy_power(c: ModelConfig) -> np.ndarray:
    """The power as the old code computed it: numpy's float32 power over the array (its SIMD loop, if any)."""
    return np.float32(c.rope_theta) ** exponents(c)


def scalar_power(c: ModelConfig) -> np.ndarray:
    """numpy's float32 power one value at a time (the C library's powf)."""
    return np.array([np.float32(c.rope_theta) ** e for e in exponents(c)], dtype=np.float32)


def rounded_power(c: ModelConfig) -> np.ndarray:
    """The same power computed in float64 and rounded once to float32."""
    return (np.float64(np.float32(c.rope_theta)) ** exponents(c).astype(np.float64)).astype(np.float32)


def old_inv_freq(c: ModelConfig, power: np.ndarray) -> np.ndarray:
    """The numpy code inv_freq had (config.py before it stopped importing numpy), given the float32 power."""
    inv = (1.0 / power).astype(np.float32)
    if c.rope_scaling is not None:
        s, f = c.rope_scaling, inv.astype(np.float64)
        low_wavelen = s.original_context_length / s.low_freq_factor
        high_wavelen = s.original_context_length / s.high_freq_factor
        wavelen = 2 * np.pi / f
        smooth = (s.original_context_length / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        blended = (1 - smooth) * f / s.factor + smooth * f
        out = np.where(wavelen > low_wavelen, f / s.factor, f)
        mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
        inv = np.where(mid, blended, out).astype(np.float32)
    if c.rope_freq_factors is not None:
        inv = (inv / np.asarray(c.rope_freq_factors, dtype=np.float32)).astype(np.float32)
    return inv


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place (the values are positive: their bit patterns are ordered)."""
    return np.abs(a.astype(np.float32).view(np.int32).astype(np.int64) - b.astype(np.float32).view(np.int32))


@pytest.fixture(scope="module")
def cases() -> list[ModelConfig]:
    return configs()


def test_equal_to_the_numpy_formula_with_a_correctly_rounded_power(cases: list[ModelConfig]) -> None:
    for c in cases:
        new = c.inv_freq()
        assert isinstance(new, list) and all(type(x) is float for x in new)
        expected = old_inv_freq(c, rounded_power(c))
        assert np.array_equal(np.asarray(new, dtype=np.float32), expected), c


def test_numpy_power_is_within_one_ulp(cases: list[ModelConfig]) -> None:
    """The one step that may differ: numpy's float32 power, vectorized or scalar, is at most 1 ulp off."""
    for c in cases:
        assert ulps(numpy_power(c), rounded_power(c)).max() <= 1, c
        assert ulps(scalar_power(c), rounded_power(c)).max() <= 1, c


def test_unscaled_values_are_within_two_ulps_of_the_old_code(cases: list[ModelConfig]) -> None:
    """Without scaling, 1 ulp of the power moves its reciprocal by at most 2 ulps (the old code's own values)."""
    for c in cases:
        if c.rope_scaling is None and c.rope_freq_factors is None:
            assert ulps(np.asarray(c.inv_freq()), old_inv_freq(c, numpy_power(c))).max() <= 2, c

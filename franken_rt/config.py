"""Model hyperparameters: the one place their names are defined, read from config.json or GGUF metadata."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from franken_rt.errors import FrankenError

# GGUF metadata keys for the llama architecture (facts of the format), by our field name.
GGUF_KEYS = {
    "n_layers": "llama.block_count",
    "dim": "llama.embedding_length",
    "ffn_dim": "llama.feed_forward_length",
    "n_heads": "llama.attention.head_count",
    "n_kv_heads": "llama.attention.head_count_kv",
    "head_dim": "llama.attention.key_length",
    "rope_dim": "llama.rope.dimension_count",
    "norm_eps": "llama.attention.layer_norm_rms_epsilon",
    "rope_theta": "llama.rope.freq_base",
    "context_length": "llama.context_length",
    "vocab_size": "llama.vocab_size",
    "rope_scaling_type": "llama.rope.scaling.type",
    "rope_scaling_factor": "llama.rope.scaling.factor",
    "rope_scaling_orig_ctx": "llama.rope.scaling.original_context_length",
}


@dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1's frequency-dependent RoPE stretch (`rope_scaling.rope_type == "llama3"`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_context_length: int

    def __post_init__(self) -> None:
        for name in ("factor", "low_freq_factor", "high_freq_factor"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 < value < 1e6:
                raise FrankenError(f"config: rope_scaling {name} = {value!r} is out of range")
        if self.high_freq_factor <= self.low_freq_factor:
            raise FrankenError("config: rope_scaling high_freq_factor must exceed low_freq_factor")
        if not 0 < self.original_context_length <= 1 << 24:
            raise FrankenError(f"config: rope_scaling original_max_position_embeddings = "
                               f"{self.original_context_length!r} is out of range")

    def apply(self, inv_freq: list[float]) -> list[float]:
        """The scaled frequencies, in double precision (as transformers computes them)."""
        return [self._scaled(f) for f in inv_freq]

    def _scaled(self, inv_freq: float) -> float:
        # Long wavelengths are slowed by `factor`, short ones kept, the band between blended smoothly.
        low_wavelen = self.original_context_length / self.low_freq_factor
        high_wavelen = self.original_context_length / self.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        if wavelen > low_wavelen:
            return inv_freq / self.factor
        if wavelen < high_wavelen:
            return inv_freq
        smooth = (self.original_context_length / wavelen - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        return (1 - smooth) * inv_freq / self.factor + smooth * inv_freq


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    norm_eps: float
    rope_theta: float
    tie_embeddings: bool
    rope_scaling: Llama3RopeScaling | None = None
    rope_freq_factors: tuple[float, ...] | None = None  # GGUF's `rope_freqs` divisors (Llama 3 scaling)

    def __post_init__(self) -> None:
        ints = {
            "n_layers": self.n_layers, "dim": self.dim, "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads, "head_dim": self.head_dim, "ffn_dim": self.ffn_dim,
            "vocab_size": self.vocab_size, "context_length": self.context_length,
        }
        for name, value in ints.items():
            if not _is_int(value) or not 0 < value <= 1 << 24:
                raise FrankenError(f"config: {name} = {value!r} is not a positive integer in range")
        if self.n_heads * self.head_dim > 1 << 24 or self.dim * max(self.ffn_dim, self.vocab_size) > 1 << 40:
            raise FrankenError("config: attention or matrix sizes are absurdly large")
        if self.n_heads % self.n_kv_heads:
            raise FrankenError(f"config: {self.n_heads} heads are not a multiple of {self.n_kv_heads} KV heads")
        if self.head_dim % 2:
            raise FrankenError(f"config: head_dim {self.head_dim} must be even for RoPE")
        if not (0 < self.norm_eps < 1) or not math.isfinite(self.norm_eps):
            raise FrankenError(f"config: rms_norm_eps = {self.norm_eps!r} is out of range")
        if not (1 < self.rope_theta < 1e12) or not math.isfinite(self.rope_theta):
            raise FrankenError(f"config: rope_theta = {self.rope_theta!r} is out of range")

    def inv_freq(self) -> list[float]:
        """RoPE inverse frequencies (head_dim/2 float32 values), scaling applied, computed as transformers does
        (in float32, the scaling in float64).

        Plain Python, not numpy: the runtime must not import numpy (over 10 MiB resident). Each float32 operation
        is done in double and rounded once to float32: exactly numpy's result for a division, and for the power the
        correctly rounded value, which numpy's float32 power is within 1 ulp of (its SIMD loop on AVX512 machines
        is 1 ulp off for ~20% of the values, which moves those frequencies by a few ulps). tests/test_inv_freq.py
        compares with the numpy code this replaced."""
        theta = _f32(self.rope_theta)
        exps = _f32s(i / self.head_dim for i in range(0, self.head_dim, 2))
        inv = _f32s(1.0 / p for p in _f32s(theta**e for e in exps))
        if self.rope_scaling is not None:
            inv = _f32s(self.rope_scaling.apply(inv))
        if self.rope_freq_factors is not None:
            inv = _f32s(f / d for f, d in zip(inv, _f32s(self.rope_freq_factors), strict=True))
        return inv

    # ---- readers -------------------------------------------------------------------------------------

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], tie_default: bool = False) -> ModelConfig:
        """From a Hugging Face `config.json` of a LlamaForCausalLM."""
        archs = cfg.get("architectures") or []
        model_type = cfg.get("model_type")
        if not isinstance(archs, list):
            raise FrankenError(f"config.json: architectures = {archs!r} is not a list")
        if model_type != "llama" and "LlamaForCausalLM" not in archs:
            raise FrankenError(f"unsupported architecture: model_type={model_type!r} architectures={archs!r}")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise FrankenError("unsupported: attention or MLP biases")
        if cfg.get("hidden_act", "silu") != "silu":
            raise FrankenError(f"unsupported activation {cfg.get('hidden_act')!r}")
        # transformers >= 5 writes `rope_parameters` (theta and scaling together); older versions
        # `rope_theta` and `rope_scaling`.
        rope_params = cfg.get("rope_parameters") or {}
        if not isinstance(rope_params, dict):
            raise FrankenError("config.json: rope_parameters is not an object")
        try:
            dim = cfg["hidden_size"]
            n_heads = cfg["num_attention_heads"]
            if not _is_int(dim) or not _is_int(n_heads) or dim <= 0 or n_heads <= 0:
                raise FrankenError(f"config.json: hidden_size = {dim!r} and num_attention_heads = {n_heads!r} "
                                   "must be positive integers")
            tie = cfg.get("tie_word_embeddings")
            tie = tie_default if tie is None else tie
            if not isinstance(tie, bool):
                raise FrankenError(f"config.json: tie_word_embeddings = {tie!r} is not true or false")
            kwargs = dict(
                n_layers=cfg["num_hidden_layers"],
                dim=dim,
                n_heads=n_heads,
                n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
                head_dim=cfg.get("head_dim") or dim // n_heads,
                ffn_dim=cfg["intermediate_size"],
                vocab_size=cfg["vocab_size"],
                context_length=cfg.get("max_position_embeddings", 2048),
                norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(cfg.get("rope_theta", rope_params.get("rope_theta", 10000.0))),
                tie_embeddings=tie,
            )
        except KeyError as e:
            raise FrankenError(f"config.json: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as e:
            raise FrankenError(f"config.json: bad field value ({e})") from None
        scaling = cfg.get("rope_scaling") or rope_params
        if scaling:
            if not isinstance(scaling, dict):
                raise FrankenError("config.json: rope_scaling is not an object")
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind == "llama3":
                try:
                    kwargs["rope_scaling"] = Llama3RopeScaling(
                        factor=float(scaling["factor"]),
                        low_freq_factor=float(scaling["low_freq_factor"]),
                        high_freq_factor=float(scaling["high_freq_factor"]),
                        original_context_length=int(scaling["original_max_position_embeddings"]),
                    )
                except (KeyError, TypeError, ValueError, OverflowError) as e:
                    raise FrankenError(f"config.json: bad llama3 rope_scaling ({e})") from None
            elif kind != "default":
                raise FrankenError(f"unsupported rope_scaling type {kind!r}")
        return cls(**kwargs)

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], vocab_size: int, tie_embeddings: bool) -> ModelConfig:
        """From GGUF metadata of architecture `llama`. Llama 3 scaling comes as the `rope_freqs` tensor."""

        def get(name: str, default: Any = None) -> Any:
            key = GGUF_KEYS[name]
            if key not in meta and default is None:
                raise FrankenError(f"GGUF: missing metadata key {key!r}")
            return meta.get(key, default)

        def num(name: str, default: Any = None, kind: type = int) -> Any:
            """A metadata number of the right kind (an integer field must not be a float, string or array)."""
            value = get(name, default)
            ok = _is_int(value) or (kind is float and isinstance(value, float))
            if not ok:
                raise FrankenError(f"GGUF: metadata {GGUF_KEYS[name]} = {value!r} is not a number of the right type")
            return kind(value)

        dim = num("dim")
        n_heads = num("n_heads")
        if n_heads <= 0:
            raise FrankenError(f"GGUF: metadata {GGUF_KEYS['n_heads']} = {n_heads} is not positive")
        head_dim = num("head_dim", 0) or num("rope_dim", 0) or dim // n_heads
        if num("rope_dim", head_dim) != head_dim:
            raise FrankenError("unsupported: partial RoPE (rope.dimension_count != head dim)")
        scaling = get("rope_scaling_type", "none")
        if scaling not in ("none", "linear") or (scaling == "linear" and num("rope_scaling_factor", kind=float) != 1):
            raise FrankenError(f"unsupported RoPE scaling {scaling!r} in GGUF metadata")
        return cls(
            n_layers=num("n_layers"),
            dim=dim,
            n_heads=n_heads,
            n_kv_heads=num("n_kv_heads", n_heads),
            head_dim=head_dim,
            ffn_dim=num("ffn_dim"),
            vocab_size=num("vocab_size", vocab_size),
            context_length=num("context_length"),
            norm_eps=num("norm_eps", kind=float),
            rope_theta=num("rope_theta", 10000.0, kind=float),
            tie_embeddings=tie_embeddings,
        )


def _f32s(values: Iterable[float]) -> list[float]:
    """Each value rounded to the nearest float32 (as a Python float)."""
    return array("f", values).tolist()


def _f32(value: float) -> float:
    return _f32s((value,))[0]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

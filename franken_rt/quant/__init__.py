"""Block quantization formats: numpy reference codecs and per-tensor policy."""

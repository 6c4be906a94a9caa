#!/usr/bin/env python
"""The tiny Qwen2.5-VL / Qwen2.5 / Qwen2-MoE builders under their first names; every family is in tiny_models.py.

    python tools/tiny_qwen2_5_vl.py OUT_DIR [--family qwen3-vl] [--preset qwen2.5-vl-7b ...]   # = tools/tiny_models.py

ms-swift loads the tiny Qwen2.5-VL with ``MAX_PIXELS=3136 swift sft --model OUT_DIR --check_model false ...``
(model_type qwen2_5_vl and template qwen2_5_vl from the directory's args.json).
"""
import sys
from pathlib import Path

from tiny_models import (FAMILIES, PRESETS, SPECIAL_TOKENS, VOCAB_SIZE, build_model, build_tokenizer,  # noqa: F401
                         family_config, main)


def build_tiny_qwen2_5_vl(out_dir, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                          vision_depth: int = 1) -> Path:
    """A ~10M-parameter ``Qwen2_5_VLForConditionalGeneration`` (``--model_type qwen2_5_vl --template qwen2_5_vl``)."""
    size = {'hidden_size': hidden_size, 'num_layers': num_layers, 'vision_depth': vision_depth}
    return build_model(out_dir, 'qwen2.5-vl', seed=seed, size=size)


def build_tiny_text_model(out_dir, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """A text-only ``Qwen2ForCausalLM`` (Qwen2.5-Instruct chat template; ``--model_type qwen2 --template qwen2_5``)."""
    return build_model(out_dir, 'qwen2.5', seed=seed, size={'hidden_size': hidden_size, 'num_layers': num_layers})


def build_tiny_moe_model(out_dir, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """A Qwen2-MoE, every layer sparse: 4 routed experts (2 per token) plus the shared expert
    (``--model_type qwen2_moe --template qwen``, Qwen2-57B-A14B-Instruct's)."""
    return build_model(out_dir, 'qwen2-moe', seed=seed, size={'hidden_size': hidden_size, 'num_layers': num_layers})


if __name__ == '__main__':
    sys.exit(main())

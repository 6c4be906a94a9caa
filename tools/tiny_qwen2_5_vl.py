#!/usr/bin/env python
"""Build tiny, random, fully offline Qwen2.5-VL / Qwen2.5 model directories for tests.

Importable module and CLI::

    python tools/tiny_qwen2_5_vl.py OUT_DIR [--seed 0] [--text]

``build_tiny_qwen2_5_vl`` writes a ~10M-parameter ``Qwen2_5_VLForConditionalGeneration`` (text hidden 64,
2 layers, 1 vision block) with a Qwen-compatible tokenizer (byte-level BPE, no merges, every special token at
Qwen's real id), a ``Qwen2_5_VLProcessor`` and a ``generation_config.json``. ms-swift loads it with::

    MAX_PIXELS=3136 swift sft --model OUT_DIR --model_type qwen2_5_vl --template qwen2_5_vl --check_model false ...

``build_tiny_text_model`` writes a tiny text-only ``Qwen2ForCausalLM`` with the same tokenizer (Qwen2.5-Instruct
chat template); ms-swift: ``--model_type qwen2 --template qwen2_5``. ``build_tiny_moe_model`` writes a tiny
Qwen2-MoE with the same tokenizer; ms-swift: ``--model_type qwen2_moe --template qwen2_5``.

``build_qwen2_5_vl`` builds any size from overrides of the tiny settings, in a given dtype and on a given device
(random init runs there, so 8B parameters take seconds on a GPU); ``QWEN2_5_VL_7B`` holds Qwen2.5-VL-7B-Instruct's
published architecture (``python tools/tiny_qwen2_5_vl.py OUT --preset qwen2.5-vl-7b --dtype bfloat16 --device cuda``:
random weights, ~16.6 GB of safetensors).

Tokenizer: transformers' ``Qwen2Tokenizer`` over a ``tokenizers`` byte-level BPE with Qwen's pre-tokenizer regex,
ids 0..255 = the byte alphabet in Qwen's order (e.g. 'Ċ'=198, 'Ġ'=220), inert filler tokens up to 151642, no merges
(so one token per UTF-8 byte), specials at 151643..151664. Like real Qwen it NFC-normalizes its input, so
``decode(encode(s)) == s`` holds for every NFC string (all scripts, emoji, control chars), while a decomposed
sequence such as 'e\u0301' comes back composed ('é').

Both builders are deterministic for a given seed and idempotent: a directory already holding a complete model
built with the same parameters is returned untouched. They write into a temporary sibling directory and rename it
into place at the end, so a half-written model directory is never left behind.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

__all__ = [
    'build_qwen2_5_vl',
    'build_tiny_qwen2_5_vl',
    'build_tiny_text_model',
    'build_tiny_moe_model',
    'build_tokenizer',
    'SPECIAL_TOKENS',
    'VOCAB_SIZE',
    'QWEN2_5_VL_CHAT_TEMPLATE',
    'QWEN2_5_CHAT_TEMPLATE',
    'QWEN2_5_VL_7B',
]

# Bump when the produced files change, so stale cached dirs get rebuilt.
BUILDER_VERSION = 1
MARKER_FILE = 'tiny_model_build.json'

VOCAB_SIZE = 151936  # Qwen2 / Qwen2.5(-VL) embedding rows (151643 BPE tokens + 22 specials + padding rows)
NUM_BPE_TOKENS = 151643  # ids 0..151642 are regular tokens, specials start at 151643

# (content, special) in id order starting at 151643; the ``special`` flags mirror Qwen's tokenizer files.
_ADDED_TOKENS: List[Tuple[str, bool]] = [
    ('<|endoftext|>', True),
    ('<|im_start|>', True),
    ('<|im_end|>', True),
    ('<|object_ref_start|>', True),
    ('<|object_ref_end|>', True),
    ('<|box_start|>', True),
    ('<|box_end|>', True),
    ('<|quad_start|>', True),
    ('<|quad_end|>', True),
    ('<|vision_start|>', True),
    ('<|vision_end|>', True),
    ('<|vision_pad|>', True),
    ('<|image_pad|>', True),
    ('<|video_pad|>', True),
    ('<tool_call>', False),
    ('</tool_call>', False),
    ('<|fim_prefix|>', False),
    ('<|fim_middle|>', False),
    ('<|fim_suffix|>', False),
    ('<|fim_pad|>', False),
    ('<|repo_name|>', False),
    ('<|file_sep|>', False),
]
SPECIAL_TOKENS: Dict[str, int] = {tok: NUM_BPE_TOKENS + i for i, (tok, _) in enumerate(_ADDED_TOKENS)}
# Qwen's ``additional_special_tokens``.
_EXTRA_SPECIAL_TOKENS = [tok for tok, special in _ADDED_TOKENS[1:] if special]

# Qwen2's pre-tokenizer split regex.
_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                      r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

# Qwen2.5-VL-*-Instruct chat template (chat_template.json / tokenizer_config.json of the released checkpoints).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Qwen2.5-*-Instruct chat template (with hermes-style tool calling).
QWEN2_5_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n")

# Image budget of the saved processor: 56x56 (4 merged tokens) .. 112x112 (16 merged tokens).
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 16

# Qwen/Qwen2.5-VL-7B-Instruct's config.json and preprocessor_config.json, as overrides of the tiny settings
# (transformers 5 names: rope_parameters, in_channels).
QWEN2_5_VL_7B: Dict[str, Any] = {
    'text': {
        'vocab_size': 152064,
        'hidden_size': 3584,
        'intermediate_size': 18944,
        'num_hidden_layers': 28,
        'num_attention_heads': 28,
        'num_key_value_heads': 4,
        'max_position_embeddings': 128000,
        'max_window_layers': 28,
        'rms_norm_eps': 1e-6,
        'rope_parameters': {'rope_type': 'default', 'mrope_section': [16, 24, 24], 'rope_theta': 1000000.0},
        'tie_word_embeddings': False,
    },
    'vision': {
        'depth': 32,
        'hidden_size': 1280,
        'intermediate_size': 3420,
        'num_heads': 16,
        'in_channels': 3,
        'hidden_act': 'silu',
        'patch_size': 14,
        'spatial_merge_size': 2,
        'temporal_patch_size': 2,
        'window_size': 112,
        'fullatt_block_indexes': [7, 15, 23, 31],
        'out_hidden_size': 3584,
    },
    'min_pixels': 3136,
    'max_pixels': 12845056,
}

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------------------------
def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2 / Qwen byte -> printable unicode char table (the byte-level BPE alphabet)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _build_vocab() -> Dict[str, int]:
    """256 byte-level symbols (ids 0..255, in Qwen's order) + inert filler tokens up to id 151642.

    There are no merges, so BPE only ever emits the single byte symbols; the fillers (lowercase ASCII words of
    length 2..4) only exist so that the special tokens land on Qwen's real ids. They decode to plain ASCII.
    """
    alphabet = sorted(_bytes_to_unicode().values())  # sorted by code point == Qwen's ids 0..255
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    letters = 'abcdefghijklmnopqrstuvwxyz'
    words: List[str] = [a + b for a in letters for b in letters]
    words += [w + c for w in words[:26 * 26] for c in letters]
    idx = len(vocab)
    for w in words:
        vocab[w] = idx
        idx += 1
    prefix_iter = iter(words[26 * 26:])  # 3-letter words -> 4-letter fillers
    while idx < NUM_BPE_TOKENS:
        w = next(prefix_iter)
        for c in letters:
            if idx >= NUM_BPE_TOKENS:
                break
            vocab[w + c] = idx
            idx += 1
    assert len(vocab) == NUM_BPE_TOKENS
    return vocab


def _build_backend_tokenizer():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    tok = Tokenizer(
        BPE(vocab=_build_vocab(), merges=[], dropout=None, unk_token=None, continuing_subword_prefix='',
            end_of_word_suffix='', fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    # Added one at a time, in order, so ids are 151643, 151644, ...
    for content, special in _ADDED_TOKENS:
        added = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False,
                           rstrip=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    for content, tid in SPECIAL_TOKENS.items():
        assert tok.token_to_id(content) == tid, (content, tok.token_to_id(content), tid)
    return tok


def _tokenizer_config(chat_template: str, model_max_length: int) -> Dict[str, Any]:
    return {
        'tokenizer_class': 'Qwen2Tokenizer',
        'added_tokens_decoder': {
            str(SPECIAL_TOKENS[c]): {
                'content': c,
                'lstrip': False,
                'normalized': False,
                'rstrip': False,
                'single_word': False,
                'special': s,
            }
            for c, s in _ADDED_TOKENS
        },
        'additional_special_tokens': list(_EXTRA_SPECIAL_TOKENS),
        'bos_token': None,
        'eos_token': '<|im_end|>',
        'pad_token': '<|endoftext|>',
        'unk_token': None,
        'errors': 'replace',
        'split_special_tokens': False,
        'clean_up_tokenization_spaces': False,
        'add_prefix_space': False,
        'model_max_length': model_max_length,
        'padding_side': 'right',
        'chat_template': chat_template,
    }


def build_tokenizer(out_dir: PathLike, chat_template: str = QWEN2_5_VL_CHAT_TEMPLATE, model_max_length: int = 32768):
    """Write tokenizer files (tokenizer.json + tokenizer_config.json) into ``out_dir`` and load them back.

    Returns the ``AutoTokenizer`` instance (transformers' ``Qwen2Tokenizer``).
    """
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _build_backend_tokenizer().save(str(out_dir / 'tokenizer.json'))
    with open(out_dir / 'tokenizer_config.json', 'w', encoding='utf-8') as f:
        json.dump(_tokenizer_config(chat_template, model_max_length), f, ensure_ascii=False, indent=2)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    for content, tid in SPECIAL_TOKENS.items():
        got = tokenizer.convert_tokens_to_ids(content)
        if got != tid:
            raise RuntimeError(f'tokenizer put {content!r} at id {got}, expected {tid}')
    if tokenizer.eos_token_id != SPECIAL_TOKENS['<|im_end|>'] or tokenizer.pad_token_id != SPECIAL_TOKENS[
            '<|endoftext|>']:
        raise RuntimeError(f'bad eos/pad ids: {tokenizer.eos_token_id}, {tokenizer.pad_token_id}')
    return tokenizer


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _is_complete(out_dir: Path, params: Dict[str, Any], required: List[str]) -> bool:
    marker = out_dir / MARKER_FILE
    try:
        with open(marker, encoding='utf-8') as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return saved == params and all((out_dir / name).is_file() for name in required)


def _atomic_build(out_dir: PathLike, params: Dict[str, Any], required: List[str], write_fn) -> Path:
    """Build into a temp sibling of ``out_dir`` via ``write_fn(tmp_dir)``, then rename into place."""
    out_dir = Path(out_dir).expanduser().absolute()
    if _is_complete(out_dir, params, required):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.tmp-', dir=str(out_dir.parent)))
    try:
        write_fn(tmp_dir)
        with open(tmp_dir / MARKER_FILE, 'w', encoding='utf-8') as f:
            json.dump(params, f, indent=2, sort_keys=True)
        missing = [name for name in required if not (tmp_dir / name).is_file()]
        if missing:
            raise RuntimeError(f'tiny model build did not write {missing}')
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes it 0700
        for child in tmp_dir.iterdir():
            if child.is_file():
                os.chmod(child, 0o644)
        if out_dir.exists() or out_dir.is_symlink():
            if _is_complete(out_dir, params, required):  # a concurrent builder finished first
                shutil.rmtree(tmp_dir, ignore_errors=True)
                return out_dir
            if out_dir.is_dir() and not out_dir.is_symlink():
                # Move the stale dir aside first so the final rename is a plain rename.
                stale = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.stale-', dir=str(out_dir.parent)))
                os.replace(out_dir, stale / 'old')
                shutil.rmtree(stale, ignore_errors=True)
            else:
                out_dir.unlink()
        try:
            os.replace(tmp_dir, out_dir)
        except OSError:
            if _is_complete(out_dir, params, required):  # lost a race against a concurrent builder
                shutil.rmtree(tmp_dir, ignore_errors=True)
                return out_dir
            raise
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_model(model, out_dir: Path) -> None:
    model.save_pretrained(str(out_dir), safe_serialization=True)


def _clean_tokenizer_config(out_dir: Path) -> None:
    """Drop load-time kwargs that transformers echoes into the saved tokenizer_config.json."""
    path = out_dir / 'tokenizer_config.json'
    with open(path, encoding='utf-8') as f:
        cfg = json.load(f)
    for key in ('is_local', 'local_files_only', 'name_or_path', '_commit_hash'):
        cfg.pop(key, None)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
        f.write('\n')


# ----------------------------------------------------------------------------------------------------------------
# Qwen2.5-VL
# ----------------------------------------------------------------------------------------------------------------
_VL_REQUIRED = [
    'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json',
    'processor_config.json'
]


def _text_config_kwargs(hidden_size: int, num_layers: int, rope_parameters: Dict[str, Any]) -> Dict[str, Any]:
    """The language-model settings shared by the VL model's text part and the text-only model."""
    if hidden_size % 16:
        raise ValueError(f'hidden_size must be a multiple of 16 (head_dim 16), got {hidden_size}')
    num_heads = hidden_size // 16
    return dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=2 if num_heads % 2 == 0 else 1,
        hidden_act='silu',
        max_position_embeddings=32768,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        use_sliding_window=False,
        sliding_window=32768,
        max_window_layers=num_layers,
        attention_dropout=0.0,
        rope_parameters=rope_parameters,
        bos_token_id=SPECIAL_TOKENS['<|endoftext|>'],
        eos_token_id=SPECIAL_TOKENS['<|im_end|>'],
        pad_token_id=SPECIAL_TOKENS['<|endoftext|>'],
        tie_word_embeddings=True,
        dtype='float32',
    )


def _vl_config(text: Dict[str, Any], vision: Dict[str, Any], dtype: str):
    """The tiny settings (derived from ``hidden_size``, ``num_hidden_layers`` and ``depth``) overridden by
    ``text`` and ``vision``."""
    from transformers import Qwen2_5_VLConfig

    hidden_size = text.get('hidden_size', 64)
    vision_depth = vision.get('depth', 1)
    vision_hidden = 32
    # mrope_section sums to head_dim // 2 (temporal, height, width), like Qwen's [16, 24, 24] for head_dim 128.
    text_config = _text_config_kwargs(hidden_size, text.get('num_hidden_layers', 2), {
        'rope_type': 'default',
        'mrope_section': [2, 3, 3],
        'rope_theta': 1000000.0,
    })
    text_config.update(text, dtype=dtype)
    vision_config = dict(
        depth=vision_depth,
        hidden_size=vision_hidden,
        hidden_act='silu',
        intermediate_size=2 * vision_hidden,
        num_heads=2,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        tokens_per_second=2,
        window_size=112,
        out_hidden_size=hidden_size,
        fullatt_block_indexes=[vision_depth - 1],
        initializer_range=0.02,
    )
    vision_config.update(vision)
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=SPECIAL_TOKENS['<|image_pad|>'],
        video_token_id=SPECIAL_TOKENS['<|video_pad|>'],
        vision_start_token_id=SPECIAL_TOKENS['<|vision_start|>'],
        vision_end_token_id=SPECIAL_TOKENS['<|vision_end|>'],
        tie_word_embeddings=text_config['tie_word_embeddings'],
        dtype=dtype,
        architectures=['Qwen2_5_VLForConditionalGeneration'],
    )


def _generation_config(temperature: float, top_p: float, top_k: int):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=SPECIAL_TOKENS['<|endoftext|>'],
        pad_token_id=SPECIAL_TOKENS['<|endoftext|>'],
        eos_token_id=[SPECIAL_TOKENS['<|im_end|>'], SPECIAL_TOKENS['<|endoftext|>']],
        do_sample=True,
        repetition_penalty=1.05,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
    )


def build_qwen2_5_vl(out_dir: PathLike,
                     text: Optional[Dict[str, Any]] = None,
                     vision: Optional[Dict[str, Any]] = None,
                     seed: int = 0,
                     dtype: str = 'float32',
                     device: str = 'cpu',
                     min_pixels: int = MIN_PIXELS,
                     max_pixels: int = MAX_PIXELS) -> Path:
    """Build a random Qwen2.5-VL model directory of any size at ``out_dir`` and return its absolute path.

    ``text`` / ``vision`` override the tiny settings (``QWEN2_5_VL_7B['text']`` etc. for the real 7B shapes).
    The weights are created and initialised directly in ``dtype`` on ``device`` and saved as one safetensors file.
    ``min_pixels`` / ``max_pixels``: the saved image processor's budget.
    """
    text, vision = dict(text or {}), dict(vision or {})
    params = {
        'kind': 'qwen2_5_vl',
        'builder_version': BUILDER_VERSION,
        'seed': int(seed),
        'text': text,
        'vision': vision,
        'dtype': dtype,
        'device': device,
        'pixels': [int(min_pixels), int(max_pixels)],
    }

    def write(tmp_dir: Path) -> None:
        import torch
        from transformers import (Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor,
                                  Qwen2VLVideoProcessor)

        config = _vl_config(text, vision, dtype)
        if config.text_config.vocab_size < NUM_BPE_TOKENS + len(SPECIAL_TOKENS):
            raise ValueError(f'vocab_size {config.text_config.vocab_size} is smaller than the tokenizer '
                             f'({NUM_BPE_TOKENS + len(SPECIAL_TOKENS)} ids)')
        _seed_everything(seed)
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype)).eval()
        model.generation_config = _generation_config(temperature=0.1, top_p=0.001, top_k=1)
        _save_model(model, tmp_dir)
        del model

        tok_dir = tmp_dir / '_tokenizer_src'
        tokenizer = build_tokenizer(tok_dir, QWEN2_5_VL_CHAT_TEMPLATE, model_max_length=32768)
        image_processor = Qwen2VLImageProcessor(
            min_pixels=min_pixels, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2)
        video_processor = Qwen2VLVideoProcessor(
            min_pixels=min_pixels, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2)
        processor = Qwen2_5_VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
        processor.save_pretrained(str(tmp_dir))
        shutil.rmtree(tok_dir)
        _clean_tokenizer_config(tmp_dir)

    return _atomic_build(out_dir, params, _VL_REQUIRED, write)


def build_tiny_qwen2_5_vl(out_dir: PathLike,
                          seed: int = 0,
                          hidden_size: int = 64,
                          num_layers: int = 2,
                          vision_depth: int = 1) -> Path:
    """Build a tiny random Qwen2.5-VL model directory at ``out_dir`` and return its absolute path.

    Loadable with ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` / ``AutoProcessor.from_pretrained`` and by
    ms-swift (``--model_type qwen2_5_vl --template qwen2_5_vl --check_model false``).
    """
    return build_qwen2_5_vl(out_dir, {'hidden_size': hidden_size, 'num_hidden_layers': num_layers},
                            {'depth': vision_depth}, seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# Qwen2.5 text
# ----------------------------------------------------------------------------------------------------------------
_TEXT_REQUIRED = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']


def _build_text_model(out_dir: PathLike, params: Dict[str, Any], make_config) -> Path:
    """A text-only causal LM from ``make_config()`` with the Qwen tokenizer (Qwen2.5-Instruct chat template)."""

    def write(tmp_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        config = make_config()
        _seed_everything(params['seed'])
        model = AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
        model.generation_config = _generation_config(temperature=0.7, top_p=0.8, top_k=20)
        _save_model(model, tmp_dir)

        tok_dir = tmp_dir / '_tokenizer_src'
        tokenizer = build_tokenizer(tok_dir, QWEN2_5_CHAT_TEMPLATE, model_max_length=131072)
        tokenizer.save_pretrained(str(tmp_dir))
        shutil.rmtree(tok_dir)
        _clean_tokenizer_config(tmp_dir)

    return _atomic_build(out_dir, params, _TEXT_REQUIRED, write)


def build_tiny_text_model(out_dir: PathLike, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """Build a tiny random text-only Qwen2 (Qwen2.5-Instruct style) model directory; same tokenizer ids.

    ms-swift: ``--model_type qwen2 --template qwen2_5 --check_model false``.
    """
    params = {
        'kind': 'qwen2',
        'builder_version': BUILDER_VERSION,
        'seed': int(seed),
        'hidden_size': int(hidden_size),
        'num_layers': int(num_layers),
    }

    def make_config():
        from transformers import Qwen2Config
        return Qwen2Config(
            **_text_config_kwargs(hidden_size, num_layers, {'rope_type': 'default', 'rope_theta': 1000000.0}),
            architectures=['Qwen2ForCausalLM'],
        )

    return _build_text_model(out_dir, params, make_config)


def build_tiny_moe_model(out_dir: PathLike, seed: int = 0, hidden_size: int = 64, num_layers: int = 2,
                         num_experts: int = 4, experts_per_token: int = 2) -> Path:
    """Build a tiny random Qwen2-MoE (Qwen1.5-MoE / Qwen2-57B-A14B architecture) model directory; same tokenizer.

    Every layer is sparse: ``num_experts`` routed experts (``experts_per_token`` per token) plus the shared
    expert. ms-swift: ``--model_type qwen2_moe --template qwen2_5 --check_model false``.
    """
    params = {
        'kind': 'qwen2_moe',
        'builder_version': BUILDER_VERSION,
        'seed': int(seed),
        'hidden_size': int(hidden_size),
        'num_layers': int(num_layers),
        'num_experts': int(num_experts),
        'experts_per_token': int(experts_per_token),
    }

    def make_config():
        from transformers import Qwen2MoeConfig
        return Qwen2MoeConfig(
            **_text_config_kwargs(hidden_size, num_layers, {'rope_type': 'default', 'rope_theta': 1000000.0}),
            num_experts=num_experts,
            num_experts_per_tok=experts_per_token,
            moe_intermediate_size=hidden_size,
            shared_expert_intermediate_size=hidden_size,
            decoder_sparse_step=1,
            architectures=['Qwen2MoeForCausalLM'],
        )

    return _build_text_model(out_dir, params, make_config)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Build a tiny random Qwen2.5-VL (or Qwen2.5 text) model dir, offline.')
    parser.add_argument('out_dir')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--text', action='store_true', help='build the text-only Qwen2 model instead')
    parser.add_argument('--hidden-size', type=int, default=64)
    parser.add_argument('--num-layers', type=int, default=2)
    parser.add_argument('--vision-depth', type=int, default=1)
    parser.add_argument('--preset', choices=['qwen2.5-vl-7b'],
                        help="a real model's architecture (random weights) instead of the size flags")
    parser.add_argument('--dtype', default='float32', help='with --preset: float32, bfloat16, ...')
    parser.add_argument('--device', default='cpu', help='with --preset: where the weights are initialised')
    args = parser.parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    if args.text:
        path = build_tiny_text_model(args.out_dir, seed=args.seed, hidden_size=args.hidden_size,
                                     num_layers=args.num_layers)
    elif args.preset:
        preset = QWEN2_5_VL_7B
        path = build_qwen2_5_vl(args.out_dir, preset['text'], preset['vision'], seed=args.seed, dtype=args.dtype,
                                device=args.device, min_pixels=preset['min_pixels'], max_pixels=preset['max_pixels'])
    else:
        path = build_tiny_qwen2_5_vl(args.out_dir, seed=args.seed, hidden_size=args.hidden_size,
                                     num_layers=args.num_layers, vision_depth=args.vision_depth)
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())

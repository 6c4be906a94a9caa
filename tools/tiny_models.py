#!/usr/bin/env python
"""Build random, fully offline model directories of the families swift-apo trains, tiny (tests, demos) or at the
published size of a real checkpoint (GPU benchmarks).

Importable module and CLI::

    python tools/tiny_models.py OUT_DIR [--family qwen3-vl] [--seed 0]
    python tools/tiny_models.py OUT_DIR --preset qwen3-vl-8b --dtype bfloat16 --device cuda
    python tools/tiny_models.py --list

Every family is built from its real transformers config, model and processor classes, with a tokenizer that has
the family's special tokens at the ids its checkpoints (and ms-swift's templates) use, and its chat template.
``FAMILIES`` lists them with the ms-swift ``--model_type`` / ``--template`` they load with; each directory also holds
an ``args.json`` naming the two, the file ``swift export`` writes into a merged model, so ``swift sft / rlhf / infer
--model DIR`` detect the family without flags, as they detect a hub id by its name.

Tokenizers: a byte-level BPE without merges (one token per UTF-8 byte, NFC-normalised as Qwen's) whose 256 byte
symbols take the lowest ids no special token uses (0..255 for the Qwen family: 'Ċ' = 198, 'Ġ' = 220 as in Qwen),
inert lowercase filler words up to the last special id, and the special tokens at their real ids. Text round-trips
(``decode(encode(s)) == s`` for every NFC string); ids are deterministic.

Builds are deterministic for a seed and idempotent: a directory already holding a complete model built with the same
parameters is returned untouched. They write into a temporary sibling directory and rename it into place at the end,
so a half-written model directory is never left behind.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

# Bump when the produced files change, so stale cached dirs get rebuilt.
BUILDER_VERSION = 2
MARKER_FILE = 'tiny_model_build.json'
PathLike = Union[str, os.PathLike]

# ----------------------------------------------------------------------------------------------------------------
# special tokens and chat templates
# ----------------------------------------------------------------------------------------------------------------
# (content, special) in id order; the ``special`` flags mirror the released tokenizer files.
_QWEN2_SPECIALS: List[Tuple[str, bool]] = [
    ('<|endoftext|>', True), ('<|im_start|>', True), ('<|im_end|>', True), ('<|object_ref_start|>', True),
    ('<|object_ref_end|>', True), ('<|box_start|>', True), ('<|box_end|>', True), ('<|quad_start|>', True),
    ('<|quad_end|>', True), ('<|vision_start|>', True), ('<|vision_end|>', True), ('<|vision_pad|>', True),
    ('<|image_pad|>', True), ('<|video_pad|>', True), ('<tool_call>', False), ('</tool_call>', False),
    ('<|fim_prefix|>', False), ('<|fim_middle|>', False), ('<|fim_suffix|>', False), ('<|fim_pad|>', False),
    ('<|repo_name|>', False), ('<|file_sep|>', False)
]
_QWEN3_EXTRA = [('<tool_response>', False), ('</tool_response>', False), ('<think>', False), ('</think>', False)]
QWEN_FIRST_SPECIAL = 151643  # Qwen2 .. Qwen3-VL: regular tokens 0..151642, specials from 151643
QWEN3_5_FIRST_SPECIAL = 248044  # Qwen3.5: the same specials in the same order from 248044 (<|image_pad|> 248056)


def _in_order(tokens: Sequence[Tuple[str, bool]], first: int) -> List[Tuple[str, int, bool]]:
    return [(content, first + i, special) for i, (content, special) in enumerate(tokens)]


# Qwen's pre-tokenizer split regex (Qwen2 .. Qwen3-VL); Qwen3.5 adds combining marks to letters.
QWEN_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                          r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN3_5_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|"""
                             r""" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Llama 3's (numbers in groups of up to three digits).
LLAMA3_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"""
                            r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def _chatml_template(image: str = '', video: str = '', default_system: Optional[str] = None,
                     generation_prefix: str = '') -> str:
    """A ChatML chat template (Qwen, InternVL, LLaVA-OneVision): messages with string or list content, ``image``
    / ``video`` for each image / video item, an optional default system message, and what the assistant turn
    starts with after ``add_generation_prompt`` (Qwen3's empty think block)."""
    system = ('{% if loop.first and message["role"] != "system" %}<|im_start|>system\n' + default_system +
              '<|im_end|>\n{% endif %}') if default_system else ''
    return ('{% for message in messages %}' + system + '<|im_start|>{{ message["role"] }}\n'
            '{% if message["content"] is string %}{{ message["content"] }}'
            '{% else %}{% for item in message["content"] %}'
            '{% if item["type"] == "image" or "image" in item %}' + image +
            '{% elif item["type"] == "video" or "video" in item %}' + video +
            '{% elif "text" in item %}{{ item["text"] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n'
            '{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n' + generation_prefix + '{% endif %}')


_QWEN_VL_IMAGE = '<|vision_start|><|image_pad|><|vision_end|>'
_QWEN_VL_VIDEO = '<|vision_start|><|video_pad|><|vision_end|>'
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
QWEN2_CHAT_TEMPLATE = _chatml_template(default_system='You are a helpful assistant.')
QWEN3_VL_CHAT_TEMPLATE = _chatml_template(_QWEN_VL_IMAGE, _QWEN_VL_VIDEO)
# Qwen3 / Qwen3.5 answer in thinking mode by default: the generation prompt opens the think block.
QWEN3_CHAT_TEMPLATE = _chatml_template()
QWEN3_5_CHAT_TEMPLATE = _chatml_template(_QWEN_VL_IMAGE, _QWEN_VL_VIDEO, generation_prefix='<think>\n')
INTERNVL_CHAT_TEMPLATE = _chatml_template('<IMG_CONTEXT>\n', '<video>\n')
LLAVA_ONEVISION_CHAT_TEMPLATE = _chatml_template('<image>\n', '<video>\n')
GEMMA3_CHAT_TEMPLATE = (
    '{{ bos_token }}{% for message in messages %}'
    '{% set role = "model" if message["role"] == "assistant" else message["role"] %}'
    '<start_of_turn>{{ role }}\n{% if message["content"] is string %}{{ message["content"] | trim }}'
    '{% else %}{% for item in message["content"] %}{% if item["type"] == "image" %}<start_of_image>'
    '{% elif item["type"] == "text" %}{{ item["text"] | trim }}{% endif %}{% endfor %}{% endif %}<end_of_turn>\n'
    '{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}')
GLM4V_CHAT_TEMPLATE = (
    '[gMASK]<sop>{% for message in messages %}<|{{ message["role"] }}|>\n'
    '{% if message["content"] is string %}{{ message["content"] }}{% else %}{% for item in message["content"] %}'
    '{% if item["type"] == "image" %}<|begin_of_image|><|image|><|end_of_image|>'
    '{% elif item["type"] == "text" %}{{ item["text"] }}{% endif %}{% endfor %}{% endif %}{% endfor %}'
    '{% if add_generation_prompt %}<|assistant|>\n{% endif %}')
LLAMA3_CHAT_TEMPLATE = ('{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message["role"] }}'
                        '<|end_header_id|>\n\n{{ message["content"] | trim }}<|eot_id|>{% endfor %}'
                        '{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}')


@dataclass(frozen=True)
class TokenizerSpec:
    """A family's tokenizer: its special tokens (content, id, special), roles and chat template."""
    added: Tuple[Tuple[str, int, bool], ...]
    chat_template: str
    eos: str
    pad: str
    bos: Optional[str] = None
    unk: Optional[str] = None
    tokenizer_class: str = 'Qwen2Tokenizer'
    pretokenize_regex: str = QWEN_PRETOKENIZE_REGEX
    # processor-facing attributes (``tokenizer.image_token`` ...), saved as tokenizer_config's extra_special_tokens
    named: Tuple[Tuple[str, str], ...] = ()
    model_max_length: int = 32768

    @property
    def ids(self) -> Dict[str, int]:
        return {content: tid for content, tid, _ in self.added}


_QWEN2_ADDED = tuple(_in_order(_QWEN2_SPECIALS, QWEN_FIRST_SPECIAL))
_QWEN3_ADDED = tuple(_in_order(_QWEN2_SPECIALS + _QWEN3_EXTRA, QWEN_FIRST_SPECIAL))
QWEN2_5_VL_TOKENIZER = TokenizerSpec(_QWEN2_ADDED, QWEN2_5_VL_CHAT_TEMPLATE, eos='<|im_end|>', pad='<|endoftext|>')
QWEN2_5_TOKENIZER = TokenizerSpec(_QWEN2_ADDED, QWEN2_5_CHAT_TEMPLATE, eos='<|im_end|>', pad='<|endoftext|>',
                                  model_max_length=131072)
QWEN2_TOKENIZER = TokenizerSpec(_QWEN2_ADDED, QWEN2_CHAT_TEMPLATE, eos='<|im_end|>', pad='<|endoftext|>',
                                model_max_length=32768)
QWEN3_VL_TOKENIZER = TokenizerSpec(_QWEN3_ADDED, QWEN3_VL_CHAT_TEMPLATE, eos='<|im_end|>', pad='<|endoftext|>',
                                   model_max_length=262144)
QWEN3_TOKENIZER = TokenizerSpec(_QWEN3_ADDED, QWEN3_CHAT_TEMPLATE, eos='<|im_end|>', pad='<|endoftext|>',
                                model_max_length=131072)
QWEN3_5_TOKENIZER = TokenizerSpec(
    tuple(_in_order(_QWEN2_SPECIALS + _QWEN3_EXTRA, QWEN3_5_FIRST_SPECIAL)), QWEN3_5_CHAT_TEMPLATE, eos='<|im_end|>',
    pad='<|endoftext|>', tokenizer_class='Qwen3_5Tokenizer', pretokenize_regex=QWEN3_5_PRETOKENIZE_REGEX,
    model_max_length=262144)
# InternVL3.5-HF: Qwen3's tokens, then InternVL's image tokens (<IMG_CONTEXT> is its config's image_token_id).
INTERNVL_TOKENIZER = TokenizerSpec(
    _QWEN3_ADDED + (('<img>', 151669, True), ('</img>', 151670, True), ('<IMG_CONTEXT>', 151671, True),
                    ('<video>', 151672, True)),
    INTERNVL_CHAT_TEMPLATE, eos='<|im_end|>', pad='<|endoftext|>',
    named=(('start_image_token', '<img>'), ('end_image_token', '</img>'), ('context_image_token', '<IMG_CONTEXT>'),
           ('video_token', '<video>')))
# LLaVA-OneVision (Qwen2 language model): <image> 151646 and <video> 151647 replace Qwen's object-ref tokens.
LLAVA_ONEVISION_TOKENIZER = TokenizerSpec(
    tuple((content, tid, special) for content, tid, special in _QWEN2_ADDED if tid not in (151646, 151647)) +
    (('<image>', 151646, True), ('<video>', 151647, True)), LLAVA_ONEVISION_CHAT_TEMPLATE, eos='<|im_end|>',
    pad='<|endoftext|>', named=(('image_token', '<image>'), ('video_token', '<video>')))
GEMMA3_TOKENIZER = TokenizerSpec(
    (('<pad>', 0, True), ('<eos>', 1, True), ('<bos>', 2, True), ('<unk>', 3, True), ('<mask>', 4, False),
     ('<start_of_turn>', 105, False), ('<end_of_turn>', 106, False), ('<start_of_image>', 255999, False),
     ('<end_of_image>', 256000, False), ('<image_soft_token>', 262144, True)),
    GEMMA3_CHAT_TEMPLATE, eos='<eos>', pad='<pad>', bos='<bos>', unk='<unk>',
    # (GemmaTokenizer would rebuild a SentencePiece-style pipeline around the vocabulary instead of this byte-level one)
    tokenizer_class='PreTrainedTokenizerFast',
    named=(('boi_token', '<start_of_image>'), ('eoi_token', '<end_of_image>'), ('image_token', '<image_soft_token>')),
    model_max_length=131072)
GLM4V_TOKENIZER = TokenizerSpec(
    tuple((content, 151329 + i, True) for i, content in enumerate([
        '<|endoftext|>', '[MASK]', '[gMASK]', '[sMASK]', '<sop>', '<eop>', '<|system|>', '<|user|>', '<|assistant|>',
        '<|observation|>', '<|begin_of_image|>', '<|end_of_image|>', '<|begin_of_video|>', '<|end_of_video|>',
        '<|image|>', '<|video|>'])) + (('<think>', 151350, False), ('</think>', 151351, False)),
    GLM4V_CHAT_TEMPLATE, eos='<|endoftext|>', pad='<|endoftext|>', tokenizer_class='PreTrainedTokenizerFast',
    named=(('image_token', '<|image|>'), ('video_token', '<|video|>')), model_max_length=65536)
LLAMA3_TOKENIZER = TokenizerSpec(
    (('<|begin_of_text|>', 128000, True), ('<|end_of_text|>', 128001, True), ('<|start_header_id|>', 128006, True),
     ('<|end_header_id|>', 128007, True), ('<|eom_id|>', 128008, True), ('<|eot_id|>', 128009, True),
     ('<|python_tag|>', 128010, True), ('<|finetune_right_pad_id|>', 128004, True)),
    LLAMA3_CHAT_TEMPLATE, eos='<|eot_id|>', pad='<|finetune_right_pad_id|>', bos='<|begin_of_text|>',
    tokenizer_class='PreTrainedTokenizerFast', pretokenize_regex=LLAMA3_PRETOKENIZE_REGEX, model_max_length=131072)

# Back-compatible names of the Qwen tokenizer (tools/tiny_qwen2_5_vl.py, tests).
SPECIAL_TOKENS: Dict[str, int] = QWEN2_5_VL_TOKENIZER.ids
VOCAB_SIZE = 151936  # Qwen2 / Qwen2.5(-VL) / Qwen3(-VL) embedding rows
NUM_BPE_TOKENS = QWEN_FIRST_SPECIAL


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


def _fillers():
    """Lowercase words of 2, 3, 4, ... letters in order: inert regular tokens (no merges ever produce them)."""
    letters = 'abcdefghijklmnopqrstuvwxyz'
    words = [a + b for a in letters for b in letters]
    while True:
        yield from words
        words = [w + c for w in words for c in letters]


def _build_vocab(spec: TokenizerSpec) -> Dict[str, int]:
    """Ids 0 .. the last special id: the specials at theirs, the 256 byte symbols (in Qwen's order) on the lowest
    free ids, fillers on the rest."""
    taken = {tid: content for content, tid, _ in spec.added}
    alphabet = iter(sorted(_bytes_to_unicode().values()))  # sorted by code point == Qwen's ids 0..255
    fillers = _fillers()
    vocab = {}
    for tid in range(max(taken) + 1):
        vocab[taken[tid] if tid in taken else next(alphabet, None) or next(fillers)] = tid
    if len(vocab) != max(taken) + 1:
        raise RuntimeError('token strings collide')
    return vocab


def _build_backend_tokenizer(spec: TokenizerSpec):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    tok = Tokenizer(
        BPE(vocab=_build_vocab(spec), merges=[], dropout=None, unk_token=None, continuing_subword_prefix='',
            end_of_word_suffix='', fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec.pretokenize_regex), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    for content, _, special in sorted(spec.added, key=lambda added: added[1]):
        added = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        tok.add_special_tokens([added]) if special else tok.add_tokens([added])
    for content, tid in spec.ids.items():
        assert tok.token_to_id(content) == tid, (content, tok.token_to_id(content), tid)
    return tok


def _tokenizer_config(spec: TokenizerSpec) -> Dict[str, Any]:
    named = dict(spec.named)
    return {
        'tokenizer_class': spec.tokenizer_class,
        'added_tokens_decoder': {
            str(tid): {'content': c, 'lstrip': False, 'normalized': False, 'rstrip': False, 'single_word': False,
                       'special': s}
            for c, tid, s in sorted(spec.added, key=lambda added: added[1])
        },
        'additional_special_tokens': [c for c, _, s in spec.added if s and c not in (spec.eos, spec.pad, spec.bos, spec.unk)
                                      and c not in named.values()],
        'extra_special_tokens': named,
        'bos_token': spec.bos,
        'eos_token': spec.eos,
        'pad_token': spec.pad,
        'unk_token': spec.unk,
        'errors': 'replace',
        'split_special_tokens': False,
        'clean_up_tokenization_spaces': False,
        'add_prefix_space': False,
        'add_bos_token': False,
        'model_max_length': spec.model_max_length,
        'padding_side': 'right',
        'chat_template': spec.chat_template,
    }


def build_tokenizer(out_dir: PathLike, spec: TokenizerSpec = QWEN2_5_VL_TOKENIZER):
    """Write tokenizer files (tokenizer.json + tokenizer_config.json) into ``out_dir``, load them back with
    transformers and check every special token's id. Returns the tokenizer."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _build_backend_tokenizer(spec).save(str(out_dir / 'tokenizer.json'))
    with open(out_dir / 'tokenizer_config.json', 'w', encoding='utf-8') as f:
        json.dump(_tokenizer_config(spec), f, ensure_ascii=False, indent=2)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    for content, tid in spec.ids.items():
        got = tokenizer.convert_tokens_to_ids(content)
        if got != tid:
            raise RuntimeError(f'tokenizer put {content!r} at id {got}, expected {tid}')
    ids = spec.ids
    if tokenizer.eos_token_id != ids[spec.eos] or tokenizer.pad_token_id != ids[spec.pad]:
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
    return saved == json.loads(json.dumps(params)) and all((out_dir / name).is_file() for name in required)


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


def _deep_update(base: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _deep_update(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def _generation_config(spec: TokenizerSpec, temperature: float, top_p: float, top_k: int):
    from transformers import GenerationConfig

    ids = spec.ids
    stop = [ids[spec.eos]] + ([ids[spec.pad]] if spec.pad != spec.eos else [])
    return GenerationConfig(bos_token_id=ids[spec.bos or spec.pad], pad_token_id=ids[spec.pad], eos_token_id=stop,
                            do_sample=True, repetition_penalty=1.05, temperature=temperature, top_p=top_p, top_k=top_k)


def _text_settings(spec: TokenizerSpec, hidden_size: int, num_layers: int, vocab_size: int,
                   head_dim: int = 16) -> Dict[str, Any]:
    """The language-model settings every tiny family shares (transformers 5 names)."""
    if hidden_size % head_dim:
        raise ValueError(f'hidden_size must be a multiple of the head dim {head_dim}, got {hidden_size}')
    num_heads = hidden_size // head_dim
    ids = spec.ids
    return dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=num_heads,
                num_key_value_heads=2 if num_heads % 2 == 0 else 1, head_dim=head_dim, hidden_act='silu',
                max_position_embeddings=32768, initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True,
                attention_dropout=0.0, bos_token_id=ids[spec.bos or spec.pad], eos_token_id=ids[spec.eos],
                pad_token_id=ids[spec.pad])


# ----------------------------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One model family: how to build it, and how ms-swift loads it."""
    name: str  # the CLI's --family
    title: str  # for tables
    model_type: str  # ms-swift --model_type
    template: str  # ms-swift --template
    architecture: str  # the transformers class
    tokenizer: TokenizerSpec
    settings: Callable[[Dict[str, Any]], Dict[str, Any]]  # tiny size knobs -> config dict (text/vision/top level)
    processor: Optional[Callable[..., Any]] = None  # (tokenizer, spec, pixels) -> processor; None: text-only
    vocab_size: int = VOCAB_SIZE
    qwen: bool = False  # a Qwen family (the coverage runs also full-tune these)
    hub_example: str = ''  # a released checkpoint of the family
    # environment of ms-swift runs on the tiny model: an image budget of 4 merged tokens for ms-swift's Qwen-VL
    # preprocessing, which otherwise scales a 56 x 56 image up to its minimum (its MAX_PIXELS / (patch x merge)^2
    # image tokens must reach IMAGE_MIN_TOKEN_NUM = 4)
    tiny_env: Tuple[Tuple[str, str], ...] = ()
    # flags LoRA needs on this family in ms-swift (a user's too): GLM-4.5V's experts are LoRA-tuned as parameters,
    # which peft allows only without dropout
    lora_flags: Tuple[str, ...] = ()

    @property
    def vision(self) -> bool:
        return self.processor is not None


# Image budget of the saved Qwen-style processors: 56x56 (4 merged tokens) .. 112x112 (16 merged tokens) at patch 14.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 16


def _qwen_vl_processor(processor_cls, patch_size: int, video_processor_cls=None):

    def make(tokenizer, spec: TokenizerSpec, pixels: Tuple[int, int]):
        import transformers
        from transformers import Qwen2VLImageProcessor
        min_pixels, max_pixels = pixels
        budget = dict(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, temporal_patch_size=2,
                      merge_size=2)
        video_cls = getattr(transformers, video_processor_cls or 'Qwen2VLVideoProcessor')
        return getattr(transformers, processor_cls)(image_processor=Qwen2VLImageProcessor(**budget), tokenizer=tokenizer,
                                                    video_processor=video_cls(**budget), chat_template=spec.chat_template)

    return make


def _qwen2_vl_settings(version: str):

    def settings(size: Dict[str, Any]) -> Dict[str, Any]:
        hidden, depth, spec = size['hidden_size'], size['vision_depth'], QWEN2_5_VL_TOKENIZER
        text = _text_settings(spec, hidden, size['num_layers'], VOCAB_SIZE)
        # mrope_section sums to head_dim // 2 (temporal, height, width), like Qwen's [16, 24, 24] for head_dim 128.
        text.update(rope_parameters={'rope_type': 'default', 'mrope_section': [2, 3, 3], 'rope_theta': 1000000.0},
                    use_sliding_window=False, sliding_window=32768, max_window_layers=size['num_layers'],
                    tie_word_embeddings=True)
        vision = dict(depth=depth, hidden_size=32, hidden_act='quick_gelu' if version == '2' else 'silu',
                      intermediate_size=64, num_heads=2, in_channels=3, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, initializer_range=0.02)
        if version == '2':
            vision.update(embed_dim=32, mlp_ratio=2, hidden_size=hidden)
        else:
            vision.update(tokens_per_second=2, window_size=112, out_hidden_size=hidden,
                          fullatt_block_indexes=[depth - 1])
        ids = spec.ids
        return dict(text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
                    video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
                    vision_end_token_id=ids['<|vision_end|>'], tie_word_embeddings=True)

    return settings


def _qwen3_vl_settings(spec: TokenizerSpec, moe: bool = False, linear_attention: bool = False):
    """Qwen3-VL (dense / MoE) and Qwen3.5 (Gated DeltaNet linear attention beside full attention): deepstack vision
    at patch 16, interleaved mrope."""

    def settings(size: Dict[str, Any]) -> Dict[str, Any]:
        hidden, depth, layers = size['hidden_size'], size['vision_depth'], size['num_layers']
        text = _text_settings(spec, hidden, layers, size['vocab_size'])
        text.update(rope_parameters={'rope_type': 'default', 'mrope_section': [2, 3, 3], 'mrope_interleaved': True,
                                     'rope_theta': 5000000.0},
                    tie_word_embeddings=True, attention_bias=False)
        if moe:
            text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden, decoder_sparse_step=1,
                        mlp_only_layers=[])
        if linear_attention:
            # one linear-attention layer, then one full-attention layer (Qwen3.5's pattern is 3:1)
            text.update(layer_types=['linear_attention', 'full_attention'] * (layers // 2) +
                        ['linear_attention'] * (layers % 2), linear_conv_kernel_dim=4, linear_key_head_dim=16,
                        linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                        partial_rotary_factor=1.0)
            text['rope_parameters']['partial_rotary_factor'] = 1.0
        vision = dict(depth=depth, hidden_size=32, hidden_act='gelu_pytorch_tanh', intermediate_size=64, num_heads=2,
                      in_channels=3, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                      out_hidden_size=hidden, num_position_embeddings=64, initializer_range=0.02)
        if not linear_attention:
            vision['deepstack_visual_indexes'] = [0]
        ids = spec.ids
        return dict(text_config=text, vision_config=vision, image_token_id=ids['<|image_pad|>'],
                    video_token_id=ids['<|video_pad|>'], vision_start_token_id=ids['<|vision_start|>'],
                    vision_end_token_id=ids['<|vision_end|>'], tie_word_embeddings=True)

    return settings


def _internvl_settings(size: Dict[str, Any]) -> Dict[str, Any]:
    spec = INTERNVL_TOKENIZER
    text = _text_settings(spec, size['hidden_size'], size['num_layers'], VOCAB_SIZE)
    text.update(model_type='qwen3', rope_parameters={'rope_type': 'default', 'rope_theta': 1000000.0},
                tie_word_embeddings=False, architectures=['Qwen3ForCausalLM'])
    # image 56 x 56 in patches of 14 -> 16 patches -> 4 tokens after the 0.5 pixel shuffle (image_seq_length 4)
    vision = dict(hidden_size=32, num_hidden_layers=size['vision_depth'], num_attention_heads=2, intermediate_size=64,
                  image_size=[56, 56], patch_size=[14, 14], hidden_act='gelu', layer_scale_init_value=0.1,
                  use_qk_norm=False, norm_type='layer_norm', use_mean_pooling=True)
    return dict(text_config=text, vision_config=vision, image_token_id=spec.ids['<IMG_CONTEXT>'],
                downsample_ratio=0.5, vision_feature_layer=-1, vision_feature_select_strategy='default',
                projector_hidden_act='gelu', tie_word_embeddings=False)


def _internvl_processor(tokenizer, spec: TokenizerSpec, pixels: Tuple[int, int]):
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor
    size = {'height': 56, 'width': 56}
    image_processor = GotOcr2ImageProcessor(size=size, crop_to_patches=False, min_patches=1, max_patches=2)
    return InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                             video_processor=InternVLVideoProcessor(size=size), image_seq_length=4,
                             chat_template=spec.chat_template)


def _llava_onevision_settings(size: Dict[str, Any]) -> Dict[str, Any]:
    spec = LLAVA_ONEVISION_TOKENIZER
    text = _text_settings(spec, size['hidden_size'], size['num_layers'], VOCAB_SIZE)
    text.update(model_type='qwen2', rope_parameters={'rope_type': 'default', 'rope_theta': 1000000.0},
                tie_word_embeddings=False, use_sliding_window=False, architectures=['Qwen2ForCausalLM'])
    vision = dict(model_type='siglip_vision_model', hidden_size=32, intermediate_size=64,
                  num_hidden_layers=size['vision_depth'] + 1, num_attention_heads=2, image_size=32, patch_size=8,
                  vision_use_head=False)
    return dict(text_config=text, vision_config=vision, image_token_index=spec.ids['<image>'],
                video_token_index=spec.ids['<video>'], vision_feature_select_strategy='full',
                vision_feature_layer=-1, vision_aspect_ratio='anyres_max_9',
                image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]], tie_word_embeddings=False)


def _llava_onevision_processor(tokenizer, spec: TokenizerSpec, pixels: Tuple[int, int]):
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor
    size = {'height': 32, 'width': 32}
    grid = [[32, 32], [32, 64], [64, 32], [64, 64]]
    return LlavaOnevisionProcessor(image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=grid),
                                   tokenizer=tokenizer, video_processor=LlavaOnevisionVideoProcessor(size=size),
                                   num_image_tokens=16, vision_feature_select_strategy='full',
                                   chat_template=spec.chat_template, vision_aspect_ratio='anyres_max_9')


def _gemma3_settings(size: Dict[str, Any]) -> Dict[str, Any]:
    spec = GEMMA3_TOKENIZER
    layers = size['num_layers']
    text = _text_settings(spec, size['hidden_size'], layers, 262208)
    # Gemma 3's pattern: five sliding-window layers, then one global one; the tiny model keeps one of each.
    text.update(hidden_activation='gelu_pytorch_tanh', query_pre_attn_scalar=16, sliding_window=16,
                layer_types=['sliding_attention', 'full_attention'] * (layers // 2) + ['sliding_attention'] * (layers % 2),
                rope_parameters={'sliding_attention': {'rope_type': 'default', 'rope_theta': 10000.0},
                                 'full_attention': {'rope_type': 'default', 'rope_theta': 1000000.0}},
                final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=True)
    text.pop('hidden_act')
    vision = dict(model_type='siglip_vision_model', hidden_size=32, intermediate_size=64,
                  num_hidden_layers=size['vision_depth'], num_attention_heads=2, image_size=32, patch_size=8,
                  vision_use_head=False)
    ids = spec.ids
    return dict(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids['<start_of_image>'],
                eoi_token_index=ids['<end_of_image>'], image_token_index=ids['<image_soft_token>'],
                tie_word_embeddings=True)


def _gemma3_processor(tokenizer, spec: TokenizerSpec, pixels: Tuple[int, int]):
    from transformers import Gemma3ImageProcessor, Gemma3Processor
    return Gemma3Processor(image_processor=Gemma3ImageProcessor(size={'height': 32, 'width': 32}), tokenizer=tokenizer,
                           chat_template=spec.chat_template, image_seq_length=4)


def _glm4v_settings(moe: bool):

    def settings(size: Dict[str, Any]) -> Dict[str, Any]:
        spec, hidden = GLM4V_TOKENIZER, size['hidden_size']
        text = _text_settings(spec, hidden, size['num_layers'], 151552)
        # rotary on half the head dim (8 of 16), mrope_section over half of that, as GLM's [8, 12, 12] of 64
        text.update(rope_parameters={'rope_type': 'default', 'mrope_section': [1, 1, 2], 'rope_theta': 10000.0,
                                     'partial_rotary_factor': 0.5},
                    attention_bias=True, tie_word_embeddings=False)
        if moe:
            text.update(n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=hidden,
                        first_k_dense_replace=0, n_group=1, topk_group=1, norm_topk_prob=True,
                        routed_scaling_factor=1.0, use_qk_norm=False)
        vision = dict(depth=size['vision_depth'], hidden_size=32, intermediate_size=hidden, num_heads=2,
                      in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden,
                      image_size=56, hidden_act='silu', rms_norm_eps=1e-5, initializer_range=0.02)
        ids = spec.ids
        return dict(text_config=text, vision_config=vision, image_token_id=ids['<|image|>'],
                    video_token_id=ids['<|video|>'], image_start_token_id=ids['<|begin_of_image|>'],
                    image_end_token_id=ids['<|end_of_image|>'], video_start_token_id=ids['<|begin_of_video|>'],
                    video_end_token_id=ids['<|end_of_video|>'], tie_word_embeddings=False)

    return settings


def _glm4v_processor(tokenizer, spec: TokenizerSpec, pixels: Tuple[int, int]):
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor
    min_pixels, max_pixels = pixels
    size = {'shortest_edge': min_pixels, 'longest_edge': max_pixels}
    return Glm4vProcessor(image_processor=Glm4vImageProcessor(size=size, patch_size=14, temporal_patch_size=2,
                                                              merge_size=2),
                          tokenizer=tokenizer, video_processor=Glm4vVideoProcessor(), chat_template=spec.chat_template)


def _qwen2_text_settings(moe: bool):

    def settings(size: Dict[str, Any]) -> Dict[str, Any]:
        spec = QWEN2_TOKENIZER if moe else QWEN2_5_TOKENIZER  # the same ids; Qwen2-MoE's chat is Qwen2's
        text = _text_settings(spec, size['hidden_size'], size['num_layers'], VOCAB_SIZE)
        text.update(rope_parameters={'rope_type': 'default', 'rope_theta': 1000000.0}, tie_word_embeddings=True,
                    use_sliding_window=False, sliding_window=32768, max_window_layers=size['num_layers'])
        text.pop('head_dim')
        if moe:  # every layer sparse: 4 routed experts (2 per token) plus the shared expert
            text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=size['hidden_size'],
                        shared_expert_intermediate_size=size['hidden_size'], decoder_sparse_step=1)
        return text

    return settings


def _qwen3_text_settings(size: Dict[str, Any]) -> Dict[str, Any]:
    text = _text_settings(QWEN3_TOKENIZER, size['hidden_size'], size['num_layers'], VOCAB_SIZE)
    text.update(rope_parameters={'rope_type': 'default', 'rope_theta': 1000000.0}, tie_word_embeddings=True,
                attention_bias=False, use_sliding_window=False)
    return text


def _llama3_settings(size: Dict[str, Any]) -> Dict[str, Any]:
    text = _text_settings(LLAMA3_TOKENIZER, size['hidden_size'], size['num_layers'], 128256)
    text.update(rope_parameters={'rope_type': 'llama3', 'rope_theta': 500000.0, 'factor': 8.0,
                                 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                                 'original_max_position_embeddings': 8192},
                tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    return text


FAMILIES: Dict[str, Family] = {f.name: f for f in [
    Family('qwen2-vl', 'Qwen2-VL', 'qwen2_vl', 'qwen2_vl', 'Qwen2VLForConditionalGeneration', QWEN2_5_VL_TOKENIZER,
           _qwen2_vl_settings('2'), _qwen_vl_processor('Qwen2VLProcessor', 14), qwen=True,
           hub_example='Qwen/Qwen2-VL-7B-Instruct', tiny_env=(('MAX_PIXELS', '3136'), )),
    Family('qwen2.5-vl', 'Qwen2.5-VL', 'qwen2_5_vl', 'qwen2_5_vl', 'Qwen2_5_VLForConditionalGeneration',
           QWEN2_5_VL_TOKENIZER, _qwen2_vl_settings('2.5'), _qwen_vl_processor('Qwen2_5_VLProcessor', 14), qwen=True,
           hub_example='Qwen/Qwen2.5-VL-7B-Instruct', tiny_env=(('MAX_PIXELS', '3136'), )),
    Family('qwen3-vl', 'Qwen3-VL', 'qwen3_vl', 'qwen3_vl', 'Qwen3VLForConditionalGeneration', QWEN3_VL_TOKENIZER,
           _qwen3_vl_settings(QWEN3_VL_TOKENIZER), _qwen_vl_processor('Qwen3VLProcessor', 16, 'Qwen3VLVideoProcessor'),
           qwen=True, hub_example='Qwen/Qwen3-VL-8B-Instruct', tiny_env=(('MAX_PIXELS', '4096'), )),
    Family('qwen3-vl-moe', 'Qwen3-VL MoE', 'qwen3_vl_moe', 'qwen3_vl', 'Qwen3VLMoeForConditionalGeneration',
           QWEN3_VL_TOKENIZER, _qwen3_vl_settings(QWEN3_VL_TOKENIZER, moe=True),
           _qwen_vl_processor('Qwen3VLProcessor', 16, 'Qwen3VLVideoProcessor'), qwen=True,
           hub_example='Qwen/Qwen3-VL-30B-A3B-Instruct', tiny_env=(('MAX_PIXELS', '4096'), )),
    Family('qwen3.5', 'Qwen3.5', 'qwen3_5', 'qwen3_5', 'Qwen3_5ForConditionalGeneration', QWEN3_5_TOKENIZER,
           _qwen3_vl_settings(QWEN3_5_TOKENIZER, linear_attention=True),
           _qwen_vl_processor('Qwen3VLProcessor', 16, 'Qwen3VLVideoProcessor'), vocab_size=248320, qwen=True,
           hub_example='Qwen/Qwen3.5-9B', tiny_env=(('MAX_PIXELS', '4096'), )),
    Family('internvl3.5', 'InternVL3.5 (HF)', 'internvl', 'internvl_hf', 'InternVLForConditionalGeneration',
           INTERNVL_TOKENIZER, _internvl_settings, _internvl_processor, hub_example='OpenGVLab/InternVL3_5-8B-HF'),
    Family('llava-onevision', 'LLaVA-OneVision', 'llava_onevision_hf', 'llava_onevision_hf',
           'LlavaOnevisionForConditionalGeneration', LLAVA_ONEVISION_TOKENIZER, _llava_onevision_settings,
           _llava_onevision_processor, hub_example='llava-hf/llava-onevision-qwen2-7b-ov-hf'),
    Family('gemma3', 'Gemma 3', 'gemma3_vision', 'gemma3_vision', 'Gemma3ForConditionalGeneration', GEMMA3_TOKENIZER,
           _gemma3_settings, _gemma3_processor, vocab_size=262208, hub_example='google/gemma-3-4b-it'),
    Family('glm4.1v', 'GLM-4.1V', 'glm4v', 'glm4v', 'Glm4vForConditionalGeneration', GLM4V_TOKENIZER,
           _glm4v_settings(moe=False), _glm4v_processor, vocab_size=151552, hub_example='ZhipuAI/GLM-4.1V-9B-Thinking'),
    Family('glm4.5v', 'GLM-4.5V (MoE)', 'glm4v_moe', 'glm4_5v', 'Glm4vMoeForConditionalGeneration', GLM4V_TOKENIZER,
           _glm4v_settings(moe=True), _glm4v_processor, vocab_size=151552, hub_example='ZhipuAI/GLM-4.5V',
           lora_flags=('--lora_dropout', '0')),
    Family('qwen2.5', 'Qwen2.5 (text)', 'qwen2', 'qwen2_5', 'Qwen2ForCausalLM', QWEN2_5_TOKENIZER,
           _qwen2_text_settings(moe=False), qwen=True, hub_example='Qwen/Qwen2.5-7B-Instruct'),
    Family('qwen2-moe', 'Qwen2-MoE (text)', 'qwen2_moe', 'qwen', 'Qwen2MoeForCausalLM', QWEN2_TOKENIZER,
           _qwen2_text_settings(moe=True), qwen=True, hub_example='Qwen/Qwen2-57B-A14B-Instruct'),
    Family('qwen3', 'Qwen3 (text)', 'qwen3', 'qwen3', 'Qwen3ForCausalLM', QWEN3_TOKENIZER, _qwen3_text_settings,
           qwen=True, hub_example='Qwen/Qwen3-8B'),
    Family('llama3', 'Llama 3 (text)', 'llama', 'llama3', 'LlamaForCausalLM', LLAMA3_TOKENIZER, _llama3_settings,
           vocab_size=128256, hub_example='meta-llama/Meta-Llama-3-8B-Instruct'),
]}


# ----------------------------------------------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------------------------------------------
TINY_SIZE = {'hidden_size': 64, 'num_layers': 2, 'vision_depth': 1}


def family_config(family: Union[str, Family], overrides: Optional[Dict[str, Any]] = None,
                  size: Optional[Dict[str, Any]] = None, dtype: str = 'float32'):
    """The transformers config of ``family``: its tiny settings (``size`` knobs: hidden_size, num_layers,
    vision_depth) with ``overrides`` (a preset's published architecture) merged over them."""
    import transformers
    family = FAMILIES[family] if isinstance(family, str) else family
    knobs = {**TINY_SIZE, **(size or {}), 'vocab_size': family.vocab_size}
    settings = _deep_update(family.settings(knobs), overrides or {})
    if 'text_config' in settings:
        settings['text_config'] = {**settings['text_config'], 'dtype': dtype}
    model_cls = getattr(transformers, family.architecture)
    return model_cls.config_class(**settings, architectures=[family.architecture], dtype=dtype)


def _swift_args(family: Family) -> Dict[str, Any]:
    """What ms-swift reads from a model directory's args.json to detect its model_type and template (a swift
    version of 4 or later makes it take model_type)."""
    try:
        from importlib.metadata import version
        swift_version = version('ms-swift')
    except Exception:  # ms-swift is not installed where the model is built
        swift_version = '4.6.0'
    return {'model_type': family.model_type, 'template': family.template, 'swift_version': swift_version}


def build_model(out_dir: PathLike,
                family: Union[str, Family] = 'qwen2.5-vl',
                seed: int = 0,
                size: Optional[Dict[str, Any]] = None,
                overrides: Optional[Dict[str, Any]] = None,
                dtype: str = 'float32',
                device: str = 'cpu',
                pixels: Tuple[int, int] = (MIN_PIXELS, MAX_PIXELS)) -> Path:
    """Build a random model directory of ``family`` at ``out_dir`` and return its absolute path.

    ``size`` overrides the tiny knobs (hidden_size 64, num_layers 2, vision_depth 1); ``overrides`` is merged over the
    resulting config dict (``PRESETS[...].overrides`` for a real model's shapes). The weights are created and
    initialised directly in ``dtype`` on ``device`` (a GPU initialises 8B parameters in seconds) and saved as
    safetensors. ``pixels``: (min, max) image budget of Qwen-style processors.
    """
    family = FAMILIES[family] if isinstance(family, str) else family
    params = {
        'kind': family.name,
        'builder_version': BUILDER_VERSION,
        'seed': int(seed),
        'size': {**TINY_SIZE, **(size or {})},
        'overrides': overrides or {},
        'dtype': dtype,
        'device': device,
        'pixels': [int(p) for p in pixels] if family.vision else None,
    }
    required = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'args.json']
    if family.vision:
        required.append('processor_config.json')

    def write(tmp_dir: Path) -> None:
        import torch
        import transformers

        config = family_config(family, overrides, size, dtype)
        vocab = config.get_text_config().vocab_size
        if vocab <= max(family.tokenizer.ids.values()):
            raise ValueError(f'vocab_size {vocab} is smaller than the tokenizer ({max(family.tokenizer.ids.values()) + 1}'
                             ' ids)')
        _seed_everything(seed)
        model_cls = getattr(transformers, family.architecture)
        with torch.device(device):
            model = model_cls._from_config(config, dtype=getattr(torch, dtype)).eval()
        sampling = (0.1, 0.001, 1) if family.vision else (0.7, 0.8, 20)
        model.generation_config = _generation_config(family.tokenizer, *sampling)
        model.save_pretrained(str(tmp_dir), safe_serialization=True)
        del model

        tok_dir = tmp_dir / '_tokenizer_src'
        tokenizer = build_tokenizer(tok_dir, family.tokenizer)
        if family.vision:
            family.processor(tokenizer, family.tokenizer, pixels).save_pretrained(str(tmp_dir))
        else:
            tokenizer.save_pretrained(str(tmp_dir))
        shutil.rmtree(tok_dir)
        _clean_tokenizer_config(tmp_dir)
        with open(tmp_dir / 'args.json', 'w', encoding='utf-8') as f:
            json.dump(_swift_args(family), f, indent=2)

    return _atomic_build(out_dir, params, required, write)


# ----------------------------------------------------------------------------------------------------------------
# published architectures (random weights), for GPU benchmarks
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    family: str
    overrides: Dict[str, Any]  # the released config.json over the tiny settings (transformers 5 names)
    pixels: Tuple[int, int]  # the released preprocessor's (min, max) pixels
    parameters: int  # parameter count of the released safetensors
    source: str


# The vision tower of Qwen3-VL-8B and Qwen3.5-9B (27 blocks of width 1152, patch 16) before a 4096-wide model.
_QWEN3_VISION = {
    'depth': 27, 'hidden_size': 1152, 'intermediate_size': 4304, 'num_heads': 16, 'in_channels': 3,
    'hidden_act': 'gelu_pytorch_tanh', 'patch_size': 16, 'spatial_merge_size': 2, 'temporal_patch_size': 2,
    'out_hidden_size': 4096, 'num_position_embeddings': 2304,
}

PRESETS: Dict[str, Preset] = {
    # Qwen/Qwen2.5-VL-7B-Instruct's config.json and preprocessor_config.json
    'qwen2.5-vl-7b': Preset('qwen2.5-vl', {
        'text_config': {
            'vocab_size': 152064, 'hidden_size': 3584, 'intermediate_size': 18944, 'num_hidden_layers': 28,
            'num_attention_heads': 28, 'num_key_value_heads': 4, 'head_dim': 128, 'max_position_embeddings': 128000,
            'max_window_layers': 28, 'rms_norm_eps': 1e-6, 'tie_word_embeddings': False,
            'rope_parameters': {'rope_type': 'default', 'mrope_section': [16, 24, 24], 'rope_theta': 1000000.0},
        },
        'vision_config': {
            'depth': 32, 'hidden_size': 1280, 'intermediate_size': 3420, 'num_heads': 16, 'in_channels': 3,
            'hidden_act': 'silu', 'patch_size': 14, 'spatial_merge_size': 2, 'temporal_patch_size': 2,
            'window_size': 112, 'fullatt_block_indexes': [7, 15, 23, 31], 'out_hidden_size': 3584,
        },
        'tie_word_embeddings': False,
    }, (3136, 12845056), 8_292_166_656, 'Qwen/Qwen2.5-VL-7B-Instruct'),
    # Qwen/Qwen3-VL-8B-Instruct's config.json and preprocessor_config.json (8.77B parameters, as its model card says)
    'qwen3-vl-8b': Preset('qwen3-vl', {
        'text_config': {
            'vocab_size': 151936, 'hidden_size': 4096, 'intermediate_size': 12288, 'num_hidden_layers': 36,
            'num_attention_heads': 32, 'num_key_value_heads': 8, 'head_dim': 128, 'max_position_embeddings': 262144,
            'rms_norm_eps': 1e-6, 'tie_word_embeddings': False,
            'rope_parameters': {'rope_type': 'default', 'mrope_section': [24, 20, 20], 'mrope_interleaved': True,
                                'rope_theta': 5000000.0},
        },
        'vision_config': {**_QWEN3_VISION, 'deepstack_visual_indexes': [8, 16, 24]},
        'tie_word_embeddings': False,
    }, (65536, 16777216), 8_767_123_696, 'Qwen/Qwen3-VL-8B-Instruct'),
    # Qwen/Qwen3.5-9B's config.json (the defaults of transformers' Qwen3_5Config describe it): 24 Gated DeltaNet
    # layers, 8 full-attention layers. Its safetensors hold 9,653,108,208 parameters (19,306,216,416 bytes of bf16);
    # the multi-token-prediction layer among them (243,294,464: one full-attention decoder layer, its input
    # projection and norms) is not part of transformers' model.
    'qwen3.5-9b': Preset('qwen3.5', {
        'text_config': {
            'vocab_size': 248320, 'hidden_size': 4096, 'intermediate_size': 12288, 'num_hidden_layers': 32,
            'num_attention_heads': 16, 'num_key_value_heads': 4, 'head_dim': 256, 'max_position_embeddings': 262144,
            'rms_norm_eps': 1e-6, 'tie_word_embeddings': False, 'attention_bias': False, 'partial_rotary_factor': 0.25,
            'layer_types': (['linear_attention'] * 3 + ['full_attention']) * 8, 'linear_conv_kernel_dim': 4,
            'linear_key_head_dim': 128, 'linear_value_head_dim': 128, 'linear_num_key_heads': 16,
            'linear_num_value_heads': 32,
            'rope_parameters': {'rope_type': 'default', 'mrope_section': [11, 11, 10], 'mrope_interleaved': True,
                                'rope_theta': 10000000.0, 'partial_rotary_factor': 0.25},
        },
        'vision_config': _QWEN3_VISION,
        'tie_word_embeddings': False,
    }, (65536, 16777216), 9_409_813_744, 'Qwen/Qwen3.5-9B'),
}


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def main(argv=None, default_family: str = 'qwen2.5-vl') -> int:
    parser = argparse.ArgumentParser(description='Build a random model directory of one family, offline: tiny, or a '
                                     "released model's architecture (--preset).")
    parser.add_argument('out_dir', nargs='?')
    parser.add_argument('--family', choices=list(FAMILIES), default=default_family)
    parser.add_argument('--text', action='store_true', help='the text-only Qwen2.5 (same as --family qwen2.5)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--hidden-size', type=int, default=TINY_SIZE['hidden_size'])
    parser.add_argument('--num-layers', type=int, default=TINY_SIZE['num_layers'])
    parser.add_argument('--vision-depth', type=int, default=TINY_SIZE['vision_depth'])
    parser.add_argument('--preset', choices=list(PRESETS), help="a released model's architecture (random weights) "
                        'instead of the tiny size; implies its family')
    parser.add_argument('--dtype', default='float32', help='float32, bfloat16, ...')
    parser.add_argument('--device', default='cpu', help='where the weights are initialised')
    parser.add_argument('--list', action='store_true', help='list the families and presets and exit')
    args = parser.parse_args(argv)
    if args.list:
        for family in FAMILIES.values():
            print(f'{family.name:16} --model_type {family.model_type:18} --template {family.template:18} '
                  f'{family.architecture} (e.g. {family.hub_example})')
        for name, preset in PRESETS.items():
            print(f'preset {name:12} {preset.family:16} {preset.parameters:,} parameters, as {preset.source}')
        return 0
    if not args.out_dir:
        parser.error('OUT_DIR is required')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    if args.preset:
        preset = PRESETS[args.preset]
        path = build_model(args.out_dir, preset.family, seed=args.seed, overrides=preset.overrides, dtype=args.dtype,
                           device=args.device, pixels=preset.pixels)
    else:
        size = {'hidden_size': args.hidden_size, 'num_layers': args.num_layers, 'vision_depth': args.vision_depth}
        path = build_model(args.out_dir, 'qwen2.5' if args.text else args.family, seed=args.seed, size=size,
                           dtype=args.dtype, device=args.device)
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())

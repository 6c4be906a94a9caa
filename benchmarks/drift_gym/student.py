"""The student: a random Qwen2.5-VL with a small gym vocabulary, and the ms-swift template that goes with it.

Qwen's tokenizer has 151,936 ids, and on a model of hidden size 128 its embedding and output head are ~60 times
the rest of the network: on 2 CPU cores one step of 16 short sequences took 14.5 s with Qwen's vocabulary and
0.6 s with 2,048 ids (measured for this gym, text part only). So the gym trains its own byte-level BPE (Qwen's
pre-tokenizer, learned merges) on the gym's own texts and prompts, with Qwen's special tokens appended after the
learned ids, and builds the tiny Qwen2.5-VL of ``tools/tiny_models.py`` (``family_config('qwen2.5-vl')``) with an
embedding of that size.
Because the special tokens are not at Qwen's ids, ms-swift's ``qwen2_5_vl`` template (which hard-codes
``<|image_pad|>`` = 151655) cannot be used; ``swift_template.py`` registers ``qwen2_5_vl_gym``, the same template
reading the ids from the tokenizer, and every ``swift`` call of the gym loads it with ``--external_plugins``.
Any text still encodes (bytes are the base alphabet); only the gym's own words are cheap.
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PLUGIN = str(Path(__file__).with_name('swift_template.py'))
TEMPLATE = 'qwen2_5_vl_gym'
SPECIAL_TOKENS = ('<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
                  '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
                  '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>')


def _tiny_models():
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        import tiny_models
    finally:
        sys.path.remove(str(REPO / 'tools'))
    return tiny_models


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE of ``vocab_size`` learned ids (the 256 bytes included) with Qwen's special tokens after."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_tiny_models().QWEN_PRETOKENIZE_REGEX), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tokenizer


def tokenizer_corpus(data_dir: str) -> List[str]:
    """What the student will read and write: the teachers' traces and questions, the majority traces, and the
    prompts wrapped around them (ms-swift's default system prompt, data_prep's consensus template)."""
    texts = []
    for name in ('teachers.jsonl', 'val.jsonl', 'test.jsonl', 'majority.jsonl'):
        with open(os.path.join(data_dir, name), encoding='utf-8') as f:
            for line in f:
                row = json.loads(line)
                texts += [row['response']] + ([row['question']] if 'question' in row else [])
    with open(REPO / 'data_prep' / 'templates' / 'consensus.txt', encoding='utf-8') as f:
        texts.append(f.read())
    texts += ['You are a helpful assistant.'] + [f'Source {i}:' for i in range(1, 10)]
    return texts


def _tokenizer_config(model_max_length: int, chat_template: str) -> dict:
    return {'tokenizer_class': 'Qwen2Tokenizer', 'bos_token': None, 'eos_token': '<|im_end|>',
            'pad_token': '<|endoftext|>', 'unk_token': None, 'errors': 'replace', 'split_special_tokens': False,
            'clean_up_tokenization_spaces': False, 'add_prefix_space': False, 'model_max_length': model_max_length,
            'padding_side': 'right', 'chat_template': chat_template,
            'additional_special_tokens': list(SPECIAL_TOKENS[1:])}


def build_student(out_dir: str, data_dir: str, *, vocab_size: int, hidden_size: int, num_layers: int,
                  vision_depth: int, vision_hidden: int, image_size: int, seed: int) -> str:
    """A random Qwen2.5-VL with the gym tokenizer at ``out_dir`` (kept when already complete)."""
    import torch
    from transformers import (AutoTokenizer, GenerationConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    out = Path(out_dir)
    if (out / 'gym_student.json').is_file():
        return str(out)
    tiny = _tiny_models()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=str(out.parent)))
    try:
        pixels = image_size * image_size
        backend = train_tokenizer(tokenizer_corpus(data_dir), vocab_size)
        tok_dir = tmp / 'tokenizer'
        tok_dir.mkdir()
        backend.save(str(tok_dir / 'tokenizer.json'))
        with open(tok_dir / 'tokenizer_config.json', 'w', encoding='utf-8') as f:
            json.dump(_tokenizer_config(32768, tiny.QWEN2_5_VL_CHAT_TEMPLATE), f, indent=1)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        rows = -(-len(tokenizer) // 64) * 64
        token_ids = {'bos_token_id': ids['<|endoftext|>'], 'pad_token_id': ids['<|endoftext|>'],
                     'eos_token_id': ids['<|im_end|>']}
        config = tiny.family_config(
            'qwen2.5-vl', size={'hidden_size': hidden_size, 'num_layers': num_layers, 'vision_depth': vision_depth},
            overrides={'text_config': {'vocab_size': rows, **token_ids},
                       'vision_config': {'hidden_size': vision_hidden, 'intermediate_size': 2 * vision_hidden,
                                         'num_heads': max(1, vision_hidden // 16)},
                       'image_token_id': ids['<|image_pad|>'], 'video_token_id': ids['<|video_pad|>'],
                       'vision_start_token_id': ids['<|vision_start|>'],
                       'vision_end_token_id': ids['<|vision_end|>']})
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        # tiny_models' Qwen2.5-VL sampling defaults (what swift infer falls back on), with the gym's ids
        model.generation_config = GenerationConfig(
            bos_token_id=ids['<|endoftext|>'], pad_token_id=ids['<|endoftext|>'],
            eos_token_id=[ids['<|im_end|>'], ids['<|endoftext|>']], do_sample=True, repetition_penalty=1.05,
            temperature=0.1, top_p=0.001, top_k=1)
        final = tmp / 'student'
        model.save_pretrained(str(final), safe_serialization=True)
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, patch_size=14,
                                                  temporal_patch_size=2, merge_size=2),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels, patch_size=14,
                                                  temporal_patch_size=2, merge_size=2),
            chat_template=tiny.QWEN2_5_VL_CHAT_TEMPLATE)
        processor.save_pretrained(str(final))
        with open(final / 'gym_student.json', 'w', encoding='utf-8') as f:
            json.dump({'vocab': len(tokenizer), 'embedding_rows': rows, 'special_ids': ids, 'seed': seed,
                       'parameters': sum(p.numel() for p in model.parameters())}, f, indent=1)
        if out.exists():
            shutil.rmtree(out)
        os.replace(final, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)

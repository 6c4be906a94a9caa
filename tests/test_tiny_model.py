"""Tests for tools/tiny_qwen2_5_vl.py: the offline tiny Qwen2.5-VL / Qwen2.5 model builder."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import torch  # noqa: E402
from PIL import Image  # noqa: E402

_TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'tiny_qwen2_5_vl.py'


def _load_tool():
    name = 'tiny_qwen2_5_vl'
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tiny = _load_tool()

QWEN_SPECIAL_IDS = {
    '<|endoftext|>': 151643,
    '<|im_start|>': 151644,
    '<|im_end|>': 151645,
    '<|object_ref_start|>': 151646,
    '<|object_ref_end|>': 151647,
    '<|box_start|>': 151648,
    '<|box_end|>': 151649,
    '<|quad_start|>': 151650,
    '<|quad_end|>': 151651,
    '<|vision_start|>': 151652,
    '<|vision_end|>': 151653,
    '<|vision_pad|>': 151654,
    '<|image_pad|>': 151655,
    '<|video_pad|>': 151656,
    '<tool_call>': 151657,
    '</tool_call>': 151658,
    '<|fim_prefix|>': 151659,
    '<|fim_middle|>': 151660,
    '<|fim_suffix|>': 151661,
    '<|fim_pad|>': 151662,
    '<|repo_name|>': 151663,
    '<|file_sep|>': 151664,
}

UNICODE_SAMPLES = [
    'Hello, world!',
    'héllo wörld — naïve café',
    '世界你好，こんにちは、안녕하세요',
    'emoji 🚀🔥 family 👨\u200d👩\u200d👧 flags 🇫🇷',
    'tabs\tand\nnewlines\r\n  trailing spaces   ',
    'ctrl \x00\x01\x7f and math ∑∫√ and ﬁ ligature',
    'Ελληνικά Русский עברית العربية हिन्दी ไทย',
]


@pytest.fixture(scope='module')
def vl_dir(tmp_path_factory):
    return tiny.build_tiny_qwen2_5_vl(tmp_path_factory.mktemp('vl') / 'tiny_qwen2_5_vl', seed=0)


@pytest.fixture(scope='module')
def text_dir(tmp_path_factory):
    return tiny.build_tiny_text_model(tmp_path_factory.mktemp('txt') / 'tiny_qwen2_5', seed=0)


@pytest.fixture(scope='module')
def processor(vl_dir):
    from transformers import AutoProcessor
    return AutoProcessor.from_pretrained(str(vl_dir))


@pytest.fixture(scope='module')
def vl_model(vl_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(str(vl_dir)).eval()


def _chat(processor, text='What is this?'):
    messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_layout_and_config(vl_dir):
    from transformers import AutoConfig
    for name in ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json',
                 'tokenizer_config.json', 'processor_config.json']:
        assert (vl_dir / name).is_file(), name
    assert not any(p.name.startswith('.') for p in vl_dir.parent.iterdir()), 'temporary build dir left behind'
    cfg = AutoConfig.from_pretrained(str(vl_dir))
    assert cfg.model_type == 'qwen2_5_vl'
    assert cfg.architectures == ['Qwen2_5_VLForConditionalGeneration']
    text, vision = cfg.text_config, cfg.vision_config
    assert text.vocab_size == 151936
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters['mrope_section']) * 2 == head_dim
    assert vision.out_hidden_size == text.hidden_size
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    assert all(0 <= i < vision.depth for i in vision.fullatt_block_indexes)
    assert cfg.image_token_id == 151655 and cfg.video_token_id == 151656


@pytest.mark.parametrize('which', ['vl', 'text'])
def test_special_token_ids(which, vl_dir, text_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(vl_dir if which == 'vl' else text_dir))
    for content, tid in QWEN_SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(content) == tid, content
        assert tok.convert_ids_to_tokens(tid) == content
        assert tok.encode(content, add_special_tokens=False) == [tid], content
    assert tok.eos_token == '<|im_end|>' and tok.eos_token_id == 151645
    assert tok.pad_token == '<|endoftext|>' and tok.pad_token_id == 151643
    assert tok.bos_token is None
    assert len(tok) == 151665
    # Byte-level ids agree with real Qwen for a few well-known tokens.
    assert tok.convert_tokens_to_ids(['!', 'Ċ', 'Ġ']) == [0, 198, 220]


@pytest.mark.parametrize('text', UNICODE_SAMPLES)
def test_unicode_round_trip(processor, text):
    tok = processor.tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    assert all(0 <= i < 151643 for i in ids)  # plain text never maps to special tokens
    assert tok.decode(ids) == text


def test_chat_template(processor, text_dir):
    from transformers import AutoTokenizer
    vl_text = _chat(processor)
    assert vl_text == ('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
                       '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n'
                       '<|im_start|>assistant\n')
    tok = AutoTokenizer.from_pretrained(str(text_dir))
    text = tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], add_generation_prompt=True, tokenize=False)
    assert text == ('<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.'
                    '<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n')


@pytest.mark.parametrize('size,n_tokens', [(56, 4), (112, 16), (448, 16)])
def test_image_placeholder_expansion(processor, size, n_tokens):
    image = Image.new('RGB', (size, size), (255, 0, 0))
    inputs = processor(text=[_chat(processor)], images=[image], return_tensors='pt')
    assert int((inputs['input_ids'] == 151655).sum()) == n_tokens
    grid = inputs['image_grid_thw'][0].tolist()
    assert grid[0] == 1 and grid[1] * grid[2] == 4 * n_tokens
    assert inputs['pixel_values'].shape == (4 * n_tokens, 3 * 2 * 14 * 14)


def test_forward_pass(processor, vl_model):
    image = Image.new('RGB', (56, 56), (0, 128, 255))
    inputs = processor(text=[_chat(processor)], images=[image], return_tensors='pt')
    with torch.no_grad():
        out = vl_model(**inputs)
    seq = inputs['input_ids'].shape[1]
    assert out.logits.shape == (1, seq, 151936)
    assert torch.isfinite(out.logits).all()
    n_params = sum(p.numel() for p in vl_model.parameters())
    assert 5e6 < n_params < 15e6


def test_text_model_forward(text_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(text_dir))
    model = AutoModelForCausalLM.from_pretrained(str(text_dir)).eval()
    assert model.config.model_type == 'qwen2'
    ids = tok.apply_chat_template([{'role': 'user', 'content': 'Hi 👋'}], add_generation_prompt=True,
                                  return_tensors='pt', return_dict=True)['input_ids']
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 151936)


def test_deterministic_and_idempotent(vl_dir, tmp_path):
    from safetensors.torch import load_file
    ref = load_file(str(vl_dir / 'model.safetensors'))

    mtime = (vl_dir / 'model.safetensors').stat().st_mtime_ns
    assert tiny.build_tiny_qwen2_5_vl(vl_dir, seed=0) == vl_dir  # complete + same params: untouched
    assert (vl_dir / 'model.safetensors').stat().st_mtime_ns == mtime

    again = load_file(str(tiny.build_tiny_qwen2_5_vl(tmp_path / 'again', seed=0) / 'model.safetensors'))
    assert ref.keys() == again.keys()
    for k in ref:
        assert torch.equal(ref[k], again[k]), k

    # Different parameters in the same dir trigger a rebuild in place.
    other = load_file(str(tiny.build_tiny_qwen2_5_vl(tmp_path / 'again', seed=1) / 'model.safetensors'))
    assert any(not torch.equal(ref[k], other[k]) for k in ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['again']


def test_ms_swift_template_encode(vl_dir):
    """ms-swift's own loader + qwen2_5_vl template accept the dir and expand <image> to 4 pads for 56x56."""
    pytest.importorskip('swift')
    from swift.model import get_model_processor
    from swift.template import get_template

    image_path = vl_dir.parent / 'red56.png'
    Image.new('RGB', (56, 56), (255, 0, 0)).save(image_path)
    _, proc = get_model_processor(str(vl_dir), model_type='qwen2_5_vl', load_model=False)
    template = get_template(proc, template_type='qwen2_5_vl')
    template.set_mode('train')
    encoded = template.encode({
        'messages': [{'role': 'user', 'content': '<image>What is this?'},
                     {'role': 'assistant', 'content': 'A red square.'}],
        'images': [str(image_path)],
    })
    assert encoded['input_ids'].count(151655) == 4
    assert encoded['image_grid_thw'].tolist() == [[1, 4, 4]]
    assert encoded['input_ids'][-2:] == [151645, 198]  # "<|im_end|>\n" ends the answer
    labels = [t for t in encoded['labels'] if t != -100]
    assert proc.tokenizer.decode(labels) == 'A red square.<|im_end|>\n'

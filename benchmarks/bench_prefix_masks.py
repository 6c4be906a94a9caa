"""Size and build time of the shared-prefix attention mask, per form, at CXR-MAX and long-answer lengths.

The three forms of one packed row's block-causal rule (swift_plugin/shared_prefix.py): the dense mask
(bool for sdpa; eager's additive bf16 mask is twice that), FlexAttention's BlockMask, and the varlen layout
of the flash kernel. Prints the bytes each keeps for the forward, the peak resident memory its build added
(sampled every 2 ms) and the build time; masks only, no attention (that needs the GPU:
bench_shared_prefix.py --attn). CPU by default.

    python benchmarks/bench_prefix_masks.py
    python benchmarks/bench_prefix_masks.py --rows 2 --lengths 1000:7x350,500:7x3500
"""
import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shared_prefix import _PeakRSS  # noqa: E402

from swift_plugin.prefix_attention import reference_varlen_attention  # noqa: E402
from swift_plugin.shared_prefix import block_causal_mask, prefix_block_mask, varlen_prefix_mask  # noqa: E402


def _shape(text):
    """'P:KxR' -> (prompt tokens, answers, tokens per answer)."""
    prompt, answers = text.split(':')
    count, length = answers.split('x')
    return int(prompt), int(count) + 1, int(length)  # K rejected + the chosen


def _segments(rows, prompt, answers, length):
    row = torch.cat([torch.zeros(prompt, dtype=torch.long)] + [torch.full((length, ), j) for j in range(1, answers + 1)])
    return row.expand(rows, -1).contiguous()


def _kept_bytes(mask):
    if isinstance(mask, torch.Tensor):
        return mask.numel() * mask.element_size()
    tensors = [getattr(mask, name) for name in mask._TENSOR_ATTRS]
    layout = getattr(mask, 'layout', None)
    if layout is not None:
        tensors = [layout.query_index, layout.key_index, layout.cu_seq_q, layout.cu_seq_k]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


FORMS = {
    'dense (sdpa bool)': block_causal_mask,
    'flex BlockMask': prefix_block_mask,
    'flash varlen layout': lambda segments: varlen_prefix_mask(segments, reference_varlen_attention),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', type=int, default=1)
    parser.add_argument('--lengths', default='1000:7x350,500:7x3500', type=lambda s: [_shape(x) for x in s.split(',')],
                        help='comma-separated P:KxR (prompt tokens : rejected answers x answer tokens)')
    args = parser.parse_args()
    print(f'{args.rows} row(s); {torch.get_num_threads()} threads\n')
    print('| L | form | kept for the forward (MiB) | build peak added (MiB) | build time (ms) |')
    print('|---:|---|---:|---:|---:|')
    for prompt, answers, length in args.lengths:
        segments = _segments(args.rows, prompt, answers, length)
        for name, build in FORMS.items():
            gc.collect()
            with _PeakRSS() as rss:
                start = time.perf_counter()
                mask = build(segments)
                seconds = time.perf_counter() - start
            print(f'| {segments.shape[1]:,} | {name} | {_kept_bytes(mask) / 2**20:.2f} | '
                  f'{(rss.peak - rss.base) / 2**20:.0f} | {seconds * 1000:.0f} |')
            del mask


if __name__ == '__main__':
    main()

"""What a GPU check needs to know about the stack it ran on (scripts/gpu_check.sh writes it to env.txt).

Versions of the stack and where each comes from, the GPU, whether ``--rlhf_type apo`` is armed, and the
attention kernels of the shared-prefix forward as they fare on this device at Qwen2.5-VL-7B's head layout
(28 query heads, 4 key/value heads, head dim 128, bf16): the varlen kernels and FlexAttention, forward and
backward, with the whole error where one fails.

    python benchmarks/gpu_env_report.py [--device cuda]
"""
import argparse
import importlib.metadata as metadata
import inspect
import platform
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PACKAGES = ('ms-swift', 'torch', 'transformers', 'accelerate', 'peft', 'trl', 'datasets', 'deepspeed', 'triton',
            'flash_attn', 'qwen_vl_utils', 'modelscope', 'pydantic', 'numpy', 'torchvision')
LAYOUT_7B = dict(heads=28, kv_heads=4, head_dim=128)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    args = parser.parse_args(argv)
    print('python', sys.version.split()[0], sys.executable, platform.platform())
    for name in PACKAGES:
        try:
            dist = metadata.distribution(name)
            print(f'{name} {dist.version} ({dist.locate_file("")})')
        except metadata.PackageNotFoundError:
            print(f'{name}: not installed')

    import torch
    print('torch cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'cuda available',
          torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f'GPU {props.name}, {props.total_memory / 2**30:.1f} GiB, capability '
              f'{torch.cuda.get_device_capability(0)}, {props.multi_processor_count} SMs, {torch.cuda.device_count()} '
              f'device(s)')
        print('sdpa backends: flash', torch.backends.cuda.flash_sdp_enabled(), 'mem-efficient',
              torch.backends.cuda.mem_efficient_sdp_enabled(), 'cudnn', torch.backends.cuda.cudnn_sdp_enabled())
    try:
        from torch.nn.attention.varlen import varlen_attn
        print('torch varlen_attn', inspect.signature(varlen_attn))
    except ImportError as error:
        print('torch varlen_attn: unavailable:', error)

    import swift_plugin
    swift_plugin.install()
    from swift_plugin.registration import apo_problem
    import swift
    print(f'swift-apo {swift_plugin.__version__} on ms-swift {swift.__version__} ({swift.__file__}); '
          f'--rlhf_type apo: {apo_problem() or "ready"}')

    from swift_plugin import prefix_attention
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    print(f'shared-prefix kernels at the 7B head layout {LAYOUT_7B}, {dtype}, on {device.type}:')
    kernels = prefix_attention.varlen_kernels(device)
    if not kernels:
        print('  varlen: none installed for this device')
    for name, kernel in kernels:
        mismatch = prefix_attention.kernel_mismatch(kernel, device, dtype, **LAYOUT_7B)
        print(f'  varlen {name}: {mismatch or "passes the check (forward and gradients)"}')
    for backward in (False, True):
        why = prefix_attention.checked_flex(device, dtype, *LAYOUT_7B.values(), backward)
        print(f'  FlexAttention {"forward and backward" if backward else "forward"}: {why or "passes the check"}')
        if why:  # the first line says what; the rest says where (Inductor's error names the template and shapes)
            print_flex_traceback(device, dtype, backward)


def print_flex_traceback(device, dtype, backward: bool) -> None:
    import torch

    from swift_plugin.prefix_attention import _check_rows, _flex
    from swift_plugin.shared_prefix import prefix_block_mask
    segments = _check_rows().to(device)
    rows, length = segments.shape
    shapes = [(rows, LAYOUT_7B['heads']), (rows, LAYOUT_7B['kv_heads']), (rows, LAYOUT_7B['kv_heads'])]
    tensors = [torch.randn(*s, length, LAYOUT_7B['head_dim'], device=device, dtype=dtype, requires_grad=backward)
               for s in shapes]
    try:
        out = _flex(*tensors, prefix_block_mask(segments), 0.125)
        if backward:
            out.float().sum().backward()
    except Exception:
        lines = traceback.format_exc().splitlines()
        print('\n'.join('    ' + line for line in lines[-40:]))


if __name__ == '__main__':
    main()

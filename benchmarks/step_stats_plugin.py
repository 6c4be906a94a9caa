"""ms-swift plugin used by benchmarks/bench_7b_cli.py: a trainer callback that times every optimizer step.

    swift rlhf ... --external_plugins benchmarks/step_stats_plugin.py --callbacks step_stats

Appends one JSON line per optimizer step to ``<output_dir>/step_stats.jsonl``: ``seconds`` from the trainer's
``on_step_begin`` to its ``on_step_end`` with the device synchronised at both ends (forward, backward, optimizer
step; the step's batch is fetched before ``on_step_begin``, so data loading is outside), and the peak memory of
the process so far: ``max_allocated`` / ``max_reserved`` bytes (torch.cuda.max_memory_allocated / _reserved;
ms-swift's own ``memory(GiB)`` log is the reserved figure) on CUDA, the peak resident set size on a CPU.
"""
import json
import os
import resource
import time

import torch
from swift.callbacks import TrainerCallback, callbacks_map


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


class StepStatsCallback(TrainerCallback):

    def on_step_begin(self, args, state, control, **kwargs):
        if _cuda():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if _cuda():
            torch.cuda.synchronize()
        line = {'step': state.global_step, 'seconds': time.perf_counter() - self._start}
        if _cuda():
            properties = torch.cuda.get_device_properties(torch.cuda.current_device())
            line.update(max_allocated=torch.cuda.max_memory_allocated(), max_reserved=torch.cuda.max_memory_reserved(),
                        device_name=properties.name, device_total=properties.total_memory)
        else:
            line['max_rss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        if state.is_world_process_zero:
            with open(os.path.join(args.output_dir, 'step_stats.jsonl'), 'a', encoding='utf-8') as f:
                f.write(json.dumps(line) + '\n')


callbacks_map['step_stats'] = StepStatsCallback

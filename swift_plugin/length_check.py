"""Rows over ``--max_length``, found and counted before training.

Under ``--truncation_strategy delete`` (ms-swift's default) a row with any sequence over max_length does not
train: ms-swift drops it while encoding, or with lazy tokenization (the default for multimodal models) swaps it
for another row at random, and says neither which rows nor how many. An APO row has K + 1 sequences, so one
teacher's long trace takes the whole row with it, and teachers with long traces end up under-represented.

So before training every row of the train and validation datasets is encoded once (``--dataset_num_proc``
processes), the rows that would not train are removed, and one log block on rank 0 counts, per source
('chosen' for the chosen answer, the ``rejected_sources`` names for the rejected ones), the answers over
max_length and the answers that do not train. With ``APO_DROP_LONG_REJECTED=1`` only the over-long rejected
answers are dropped (``rows.kept_answers``; the encoding drops the same answers again at training time).
The check is exact and processes a row's images once where its answers share the prompt and images (the
rejected lengths follow from the chosen one and the answers' token counts, ``template._shared_prompt_lengths``);
other rows are encoded in full, once per sequence. ``--apo_length_check false`` skips the check.
"""
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from datasets import Dataset as HfDataset
from datasets import Features, Value
from datasets import Sequence as HfSequence
from swift.utils import get_logger, is_master, safe_ddp_context

from .rows import APORowError, kept_answers
from .template import apo_row_fits, describe_row

logger = get_logger()
CHOSEN = 'chosen'
UNNAMED = 'rejected'  # the rejected answers of rows without rejected_sources
_FEATURES = Features({'fits': HfSequence(Value('bool')), 'sources': HfSequence(Value('string')),
                      'error': Value('string')})


@dataclass
class SourceCount:
    answers: int = 0
    over_max_length: int = 0
    not_trained: int = 0


@dataclass
class LengthTally:
    rows: int = 0
    kept: List[int] = field(default_factory=list)  # indices of the rows that train
    over_max_length: List[Tuple[int, str]] = field(default_factory=list)  # (row, what is over) of dropped rows
    failed: List[Tuple[int, str]] = field(default_factory=list)  # (row, error) of rows that could not be encoded
    sources: Dict[str, SourceCount] = field(default_factory=dict)


def tally_lengths(fits: Sequence[Optional[Sequence[bool]]], sources: Sequence[Optional[Sequence[str]]],
                  errors: Sequence[Optional[str]], drop_long_rejected: bool) -> LengthTally:
    """Count, per source, the answers over max_length and those that do not train; pick the rows that train.

    ``fits[i]`` is [chosen, rejected 1..K] of row i (see ``template.apo_row_fits``), ``sources[i]`` its
    rejected_sources or None, ``errors[i]`` why it could not be encoded, or None.
    """
    tally = LengthTally(rows=len(fits))
    for i, (row_fits, row_sources, error) in enumerate(zip(fits, sources, errors)):
        if error is not None:
            tally.failed.append((i, error))
            continue
        names = [CHOSEN] + list(row_sources or [UNNAMED] * (len(row_fits) - 1))
        kept = kept_answers(row_fits, drop_long_rejected)
        if kept is None:
            tally.over_max_length.append((i, ', '.join(name for name, fit in zip(names, row_fits) if not fit)))
            trained = [False] * len(row_fits)
        else:
            tally.kept.append(i)
            trained = [True] + [k in kept for k in range(len(row_fits) - 1)]
        for name, fit, trains in zip(names, row_fits, trained):
            count = tally.sources.setdefault(name, SourceCount())
            count.answers += 1
            count.over_max_length += not fit
            count.not_trained += not trains
    return tally


def format_report(tallies: Dict[str, LengthTally], max_length: int, drop_long_rejected: bool) -> str:
    lines = [f'APO length check (--max_length {max_length}, --truncation_strategy delete, '
             f'--apo_drop_long_rejected {str(drop_long_rejected).lower()}):']
    for name, tally in tallies.items():
        dropped = tally.rows - len(tally.kept)
        over = sum(count.over_max_length for count in tally.sources.values())
        if not dropped and not over:
            lines.append(f'  {name}: {tally.rows} rows, every answer fits')
            continue
        lines.append(f'  {name}: {tally.rows} rows, {len(tally.kept)} train, {dropped} dropped '
                     f'({len(tally.over_max_length)} over max_length, {len(tally.failed)} failed to encode)')
        width = max(len(source) for source in tally.sources)
        lines.append(f'    {"source":<{width}}  {"answers":>7}  {"over max_length":>15}  {"not trained":>11}')
        for source, count in tally.sources.items():
            lines.append(f'    {source:<{width}}  {count.answers:>7}  {count.over_max_length:>15}  '
                         f'{count.not_trained:>11}')
        for _, error in tally.failed[:3]:
            lines.append(f'    failed to encode: {error}')
    return '\n'.join(lines)


def _check_rows(batch: Dict[str, List[Any]], template) -> Dict[str, List[Any]]:
    columns = list(batch)
    result = {'fits': [], 'sources': [], 'error': []}
    for values in zip(*(batch[c] for c in columns)):
        row = dict(zip(columns, values))
        fits, sources, error = None, None, None
        try:
            fits, sources = apo_row_fits(template, row)
        except APORowError as e:  # names the row itself
            error = str(e)
        except Exception as e:  # decided by --strict in the main process, as ms-swift's encoding would
            error = f'{describe_row(row)}: {type(e).__name__}: {e}'
        result['fits'].append(fits)
        result['sources'].append(sources)
        result['error'].append(error)
    return result


def _tally_dataset(args, template, dataset: HfDataset, drop_long_rejected: bool) -> LengthTally:
    load_from_cache_file = args.load_from_cache_file or not is_master()  # other ranks reuse rank 0's result
    model, template.model = template.model, None  # not pickled into the workers
    try:
        with safe_ddp_context(None, True):
            checked = dataset.map(
                _check_rows,
                fn_kwargs={'template': template},
                batched=True,
                batch_size=100,
                # num_proc=1 would still start a pool (and datasets then swaps os.environ for a copy of it)
                num_proc=args.dataset_num_proc if args.dataset_num_proc > 1 else None,
                load_from_cache_file=load_from_cache_file,
                remove_columns=dataset.column_names,
                features=_FEATURES,
                desc='APO length check')
    finally:
        template.model = model
    return tally_lengths(checked['fits'], checked['sources'], checked['error'], drop_long_rejected)


def drop_over_long_rows(args, template, *datasets):
    """Remove the rows that would not train from ``(train_dataset, val_dataset)`` and log what they cost."""
    if template.truncation_strategy != 'raise' or template.max_length is None:
        return datasets  # left/right truncation cuts sequences instead of dropping rows
    if not args.apo_length_check:
        logger.info('APO length check off (--apo_length_check false): rows over max_length are dropped as they are '
                    'encoded, uncounted.')
        return datasets
    drop_long_rejected = args.apo_drop_long_rejected
    tallies, result = {}, []
    started = time.time()
    for name, dataset in zip(('train', 'val'), datasets):
        if dataset is None or not isinstance(dataset, HfDataset):
            if dataset is not None:
                logger.warning(f'APO length check: the {name} dataset is streamed, so its rows over max_length '
                               'cannot be counted before training; they are dropped as they come.')
            result.append(dataset)
            continue
        tally = _tally_dataset(args, template, dataset, drop_long_rejected)
        if args.strict and (tally.over_max_length or tally.failed):
            problems = [(i, f'{describe_row(dataset[i])}: over max_length {template.max_length}: {over}')
                        for i, over in tally.over_max_length[:1]] + tally.failed[:1]
            raise ValueError(f'APO length check, {name} dataset: {min(problems)[1]} (--strict true stops at a row '
                             'that would not train)')
        tallies[name] = tally
        result.append(dataset if len(tally.kept) == len(dataset) else dataset.select(tally.kept))
    if tallies and is_master():
        logger.info(format_report(tallies, template.max_length, drop_long_rejected)
                    + f'\n  ({time.time() - started:.1f} s, --dataset_num_proc {args.dataset_num_proc})')
    empty = [name for name, tally in tallies.items() if tally.rows and not tally.kept]
    if empty:
        raise ValueError(f'APO length check: no row of the {" and ".join(empty)} dataset trains under --max_length '
                         f'{template.max_length} (see the counts above): raise --max_length, or set '
                         '--apo_drop_long_rejected true to drop only over-long rejected answers.')
    return tuple(result)

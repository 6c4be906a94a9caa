"""Counting rows and answers over --max_length (pure part; the CLI run is in test_cli_rows.py)."""
import pytest

from swift_plugin.length_check import format_report, tally_lengths

# [chosen, rejected 1..K] fits per row; rows 1 and 3 have over-long answers, row 4 failed to encode.
FITS = [[True, True, True], [True, True, False], [True, True], [False, True, False], None]
SOURCES = [['GPT-5', 'Grok-4'], ['GPT-5', 'Grok-4'], None, ['GPT-5', 'Grok-4'], None]
ERRORS = [None, None, None, None, 'APORowError: bad row']


def _counts(tally):
    return {name: (c.answers, c.over_max_length, c.not_trained) for name, c in tally.sources.items()}


def test_whole_rows_go_by_default():
    tally = tally_lengths(FITS, SOURCES, ERRORS, drop_long_rejected=False)
    assert tally.rows == 5 and tally.kept == [0, 2]
    assert tally.over_max_length == [(1, 'Grok-4'), (3, 'chosen, Grok-4')]
    assert tally.failed == [(4, 'APORowError: bad row')]
    # Row 3 drops GPT-5's answer although it fits: "not trained" counts what a source loses.
    assert _counts(tally) == {'chosen': (4, 1, 2), 'GPT-5': (3, 0, 2), 'Grok-4': (3, 2, 2), 'rejected': (1, 0, 0)}


def test_drop_long_rejected_keeps_rows_whose_chosen_and_one_rejected_answer_fit():
    tally = tally_lengths(FITS, SOURCES, ERRORS, drop_long_rejected=True)
    assert tally.kept == [0, 1, 2]
    assert tally.over_max_length == [(3, 'chosen, Grok-4')]
    assert _counts(tally) == {'chosen': (4, 1, 1), 'GPT-5': (3, 0, 1), 'Grok-4': (3, 2, 2), 'rejected': (1, 0, 0)}


def test_report_block():
    tallies = {'train': tally_lengths(FITS, SOURCES, ERRORS, drop_long_rejected=False),
               'val': tally_lengths([[True, True]], [None], [None], drop_long_rejected=False)}
    assert format_report(tallies, 4096, drop_long_rejected=False).splitlines() == [
        'APO length check (--max_length 4096, --truncation_strategy delete, APO_DROP_LONG_REJECTED=0):',
        '  train: 5 rows, 2 train, 3 dropped (2 over max_length, 1 failed to encode)',
        '    source    answers  over max_length  not trained',
        '    chosen          4                1            2',
        '    GPT-5           3                0            2',
        '    Grok-4          3                2            2',
        '    rejected        1                0            0',
        '    failed to encode: APORowError: bad row',
        '  val: 1 rows, every answer fits',
    ]


@pytest.mark.parametrize('drop_long_rejected', [False, True])
def test_every_answer_is_counted_once(drop_long_rejected):
    tally = tally_lengths(FITS, SOURCES, ERRORS, drop_long_rejected)
    assert sum(c.answers for c in tally.sources.values()) == sum(len(f) for f in FITS if f is not None)
    assert sum(c.over_max_length for c in tally.sources.values()) == sum(f.count(False) for f in FITS if f)


@pytest.fixture(scope='module')
def processor(tiny_text_model):
    from swift.model import get_processor
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('HF_HUB_OFFLINE', '1')
        yield get_processor(tiny_text_model, model_type='qwen2')


def _template(processor, **kwargs):
    from swift.template import get_template
    template = get_template(processor, template_type='qwen2_5', **kwargs)
    template.set_mode('apo')
    return template


def _dataset(long_answers):
    """One row per entry: its rejected answers [T0, T1], True where the answer is long (~300 tokens, vs ~40)."""
    from datasets import Dataset
    return Dataset.from_list([{
        'messages': [{'role': 'user', 'content': f'Findings {i}?'}, {'role': 'assistant', 'content': f'C{i}.'}],
        'rejected_response': [('long ' * 60 if long else 'short') + f' T{j} on {i}' for j, long in enumerate(row)],
        'rejected_sources': ['T0', 'T1'],
    } for i, row in enumerate(long_answers)])


def _args(**overrides):
    from types import SimpleNamespace
    return SimpleNamespace(**{'strict': False, 'dataset_num_proc': 1, 'load_from_cache_file': False, **overrides})


def test_rows_that_would_not_train_leave_the_dataset(processor, monkeypatch, caplog):
    from swift_plugin.length_check import drop_over_long_rows
    train, val = _dataset([[False, False], [False, True], [True, True]]), _dataset([[False, False]])
    template = _template(processor, max_length=200)
    with caplog.at_level('INFO'):
        kept_train, kept_val = drop_over_long_rows(_args(), template, train, val)
    assert [r['messages'][0]['content'] for r in kept_train] == ['Findings 0?'] and kept_val is val
    assert '  train: 3 rows, 1 train, 2 dropped (2 over max_length, 0 failed to encode)' in caplog.text
    assert '  val: 1 rows, every answer fits' in caplog.text
    monkeypatch.setenv('APO_DROP_LONG_REJECTED', '1')
    kept_train, _ = drop_over_long_rows(_args(), template, train, val)
    assert len(kept_train) == 2  # row 1 keeps T0; row 2 has no rejected answer left
    # --strict true stops instead, naming the row; a dataset left with no row stops with the remedy.
    with pytest.raises(ValueError, match=r"train dataset: row with messages .*'Findings 2\?'.*over max_length 200: "
                       'T0, T1 '):
        drop_over_long_rows(_args(strict=True), template, train, val)
    with pytest.raises(ValueError, match='no row of the train dataset trains under --max_length 200'):
        drop_over_long_rows(_args(), template, _dataset([[True, True]]), None)


def test_nothing_to_check_when_rows_are_truncated_or_the_check_is_off(processor, monkeypatch):
    from swift_plugin.length_check import drop_over_long_rows
    train = _dataset([[True, True]])
    assert drop_over_long_rows(_args(), _template(processor, max_length=200, truncation_strategy='left'), train,
                               None) == (train, None)
    monkeypatch.setenv('APO_LENGTH_CHECK', '0')
    assert drop_over_long_rows(_args(), _template(processor, max_length=200), train, None) == (train, None)

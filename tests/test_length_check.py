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
        'APO length check (--max_length 4096, --truncation_strategy delete, --apo_drop_long_rejected false):',
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
    return SimpleNamespace(**{'strict': False, 'dataset_num_proc': 1, 'load_from_cache_file': False,
                              'apo_length_check': True, 'apo_drop_long_rejected': False, **overrides})


def test_rows_that_would_not_train_leave_the_dataset(processor, caplog):
    from swift_plugin.length_check import drop_over_long_rows
    train, val = _dataset([[False, False], [False, True], [True, True]]), _dataset([[False, False]])
    template = _template(processor, max_length=200)
    with caplog.at_level('INFO'):
        kept_train, kept_val = drop_over_long_rows(_args(), template, train, val)
    assert [r['messages'][0]['content'] for r in kept_train] == ['Findings 0?'] and kept_val is val
    assert '  train: 3 rows, 1 train, 2 dropped (2 over max_length, 0 failed to encode)' in caplog.text
    assert '  val: 1 rows, every answer fits' in caplog.text
    kept_train, _ = drop_over_long_rows(_args(apo_drop_long_rejected=True), template, train, val)
    assert len(kept_train) == 2  # row 1 keeps T0; row 2 has no rejected answer left
    # --strict true stops instead, naming the row; a dataset left with no row stops with the remedy.
    with pytest.raises(ValueError, match=r"train dataset: row with messages .*'Findings 2\?'.*over max_length 200: "
                       'T0, T1 '):
        drop_over_long_rows(_args(strict=True, apo_drop_long_rejected=True), template, train, val)
    with pytest.raises(ValueError, match='no row of the train dataset trains under --max_length 200'):
        drop_over_long_rows(_args(apo_drop_long_rejected=True), template, _dataset([[True, True]]), None)


def test_nothing_to_check_when_rows_are_truncated_or_the_check_is_off(processor):
    from swift_plugin.length_check import drop_over_long_rows
    train = _dataset([[True, True]])
    assert drop_over_long_rows(_args(), _template(processor, max_length=200, truncation_strategy='left'), train,
                               None) == (train, None)
    assert drop_over_long_rows(_args(apo_length_check=False), _template(processor, max_length=200), train,
                               None) == (train, None)


# The fast path (one image encoding per row) against the full encoding of every sequence, on the real
# qwen2_5_vl template: varied K, answer lengths and scripts, with and without images, system and history.
ANSWER_WORDS = ['opacity', 'Lungenödem', '肺水肿', 'épanchement', '🫁', 'no', 'consolidation,', '\n-', 'ok.']


def _vl_rows(image_dir):
    from PIL import Image
    rows = []
    for i, k in enumerate([1, 2, 3, 7, 4, 7, 5]):
        def answer(j):
            words = [ANSWER_WORDS[(i * 7 + j * 3 + w) % len(ANSWER_WORDS)] for w in range(1 + 37 * j % 90)]
            return ' '.join(words) + (' <|im_end|>' if (i + j) % 5 == 4 else '')  # ms-swift then adds no EOS

        messages = [{'role': 'user', 'content': f'<image>Findings of study {i}? Résumé.'},
                    {'role': 'assistant', 'content': answer(k + 1)}]
        if i % 3 == 1:  # a history round before the prompt
            messages = [{'role': 'user', 'content': 'Earlier study?'}, {'role': 'assistant', 'content': 'Clear.'}
                        ] + messages
        row = {'messages': messages, 'rejected_response': [answer(j) for j in range(k)]}
        if i % 2 == 0:
            row['images'] = [str(image_dir / f'cxr{i}.png')]
            Image.new('RGB', (56 + 28 * i, 84), (30 * i, 90, 200)).save(row['images'][0])
        else:
            messages[-2]['content'] = messages[-2]['content'].replace('<image>', '')
        if i % 3 == 2:
            row['system'] = 'You are a radiologist. 放射科医生.'
        rows.append(row)
    return rows


@pytest.fixture(scope='module')
def vl_template(tiny_vl_model):
    from swift.model import get_processor
    from swift.template import get_template
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('HF_HUB_OFFLINE', '1')
        mp.setenv('MAX_PIXELS', '3136')  # the other tests' size: the first Qwen2.5-VL processor in a process fixes it
        template = get_template(get_processor(tiny_vl_model, model_type='qwen2_5_vl'), template_type='qwen2_5_vl',
                                truncation_strategy='raise')  # what --truncation_strategy delete sets
    template.set_mode('apo')
    return template


def _full_lengths(template, row, monkeypatch):
    from swift_plugin.template import _encode_sequences
    monkeypatch.setattr(template, 'max_length', None)
    sequences = _encode_sequences(template, row)
    monkeypatch.undo()
    return [sequences.chosen['length']] + [answer['length'] for answer in sequences.answers]


def test_fast_length_check_equals_the_full_encoding(vl_template, tmp_path, monkeypatch):
    from swift_plugin.template import _encode_sequences, _shared_prompt_lengths, _split_row, apo_row_fits
    rows = _vl_rows(tmp_path)
    lengths = []
    for row in rows:
        fast = _shared_prompt_lengths(vl_template, *_split_row(row))
        assert fast is not None and fast == _full_lengths(vl_template, row, monkeypatch)
        lengths.append(fast)
    assert len({n for row in lengths for n in row}) > 20  # the rows do differ
    # max_length values that cut some answers of some rows, at each length and one below it
    cuts = sorted({n for row in lengths for n in row})[::4]
    cut_rows = 0
    for max_length in cuts + [n - 1 for n in cuts]:
        monkeypatch.setattr(vl_template, 'max_length', max_length)
        for row in rows:
            fits, sources = apo_row_fits(vl_template, row)
            assert fits == _encode_sequences(vl_template, row).fits
            cut_rows += 0 < sum(fits) < len(fits)
    assert cut_rows > 10


def test_fast_length_check_declines_rows_and_templates_it_cannot_prove(vl_template, tmp_path, monkeypatch):
    from swift_plugin.template import _shared_prompt_lengths, _split_row
    row = _vl_rows(tmp_path)[2]
    assert _shared_prompt_lengths(vl_template, *_split_row(row)) is not None
    per_answer_images = {**row, 'rejected_images': [row['images']] * len(row['rejected_response'])}
    trajectory = {**row, 'rejected_response': [{'role': 'assistant', 'content': 'a'},
                                               {'role': 'tool', 'content': 'b'},
                                               {'role': 'assistant', 'content': 'c'}]}
    for other in (per_answer_images, trajectory):
        assert _shared_prompt_lengths(vl_template, *_split_row(other)) is None
    monkeypatch.setattr(vl_template, 'template_backend', 'jinja')
    assert _shared_prompt_lengths(vl_template, *_split_row(row)) is None

"""Reading and checking APO rows: every bad input names its file, row and field."""
import json

import pytest

from swift_plugin.rows import (APORowError, column_renames, kept_answers, local_dataset_file, parse_rejected,
                               validate_dataset_file)

PROMPT = [{'role': 'user', 'content': '<image>Which findings support atelectasis?'}]


def _row(chosen='Consensus: volume loss at the left base.', **fields):
    return {'messages': PROMPT + [{'role': 'assistant', 'content': chosen}], **fields}


def test_list_of_strings_gives_k_alternatives_with_sources():
    parsed = parse_rejected(_row(rejected_response=['a', 'b', 'c'], rejected_sources=['GPT-5', 'Grok-4', 'GLM-4.5V']))
    assert len(parsed) == 3
    assert parsed.trajectories[1] == [{'role': 'assistant', 'content': 'b'}]
    assert parsed.sources == ['GPT-5', 'Grok-4', 'GLM-4.5V']


def test_single_string_is_k1_and_message_list_is_one_trajectory():
    assert parse_rejected(_row(rejected_response='no')).trajectories == [[{'role': 'assistant', 'content': 'no'}]]
    trajectory = [{'role': 'assistant', 'content': 'call'}, {'role': 'tool', 'content': 'out'},
                  {'role': 'assistant', 'content': 'final'}]
    parsed = parse_rejected(_row(rejected_response=trajectory))
    assert parsed.trajectories == [trajectory] and parsed.sources is None


@pytest.mark.parametrize('fields, field, problem', [
    ({}, "'rejected_response'", 'missing'),
    ({'rejected_response': []}, "'rejected_response'", 'empty list'),
    ({'rejected_response': ''}, "'rejected_response'", 'empty string'),
    ({'rejected_response': ['ok', '  ']}, r"'rejected_response\[1\]'", 'empty string'),
    ({'rejected_response': ['ok', {'role': 'assistant', 'content': 'x'}]}, "'rejected_response'", 'mixes strings'),
    ({'rejected_response': ['ok', 3]}, "'rejected_response'", 'must be strings'),
    ({'rejected_response': 7}, "'rejected_response'", 'found int'),
    ({'rejected_response': ['a', 'b'], 'rejected_sources': ['GPT-5']}, "'rejected_sources'", 'has 1 entries but'),
    ({'rejected_response': ['a'], 'rejected_sources': [None]}, "'rejected_sources'", 'non-empty strings'),
    ({'rejected_response': ['a', 'Consensus: volume loss at the left base.']}, r"'rejected_response\[1\]'",
     'identical to the chosen'),
    ({'rejected_response': [{'role': 'user', 'content': 'x'}]}, r"'rejected_response\[0\]'", "'user' message"),
])
def test_bad_rows_name_the_row_and_field(fields, field, problem):
    with pytest.raises(APORowError, match=f'^data.jsonl line 4: field {field}: .*{problem}'):
        parse_rejected(_row(**fields), where='data.jsonl line 4')


def test_validate_file_names_the_line(tmp_path):
    path = tmp_path / 'apo.jsonl'
    rows = [_row(rejected_response=['a', 'b']), _row(rejected_response='c'), _row(rejected_response=['d', ''])]
    path.write_text('\n'.join(json.dumps(r) for r in rows[:2]) + '\n\n' + json.dumps(rows[2]) + '\n')
    with pytest.raises(APORowError, match=f"^{path} line 4: field 'rejected_response\\[1\\]': empty string"):
        validate_dataset_file(str(path))
    path.write_text(json.dumps(rows[0]) + '\n{"messages": [\n')
    with pytest.raises(APORowError, match=f'^{path} line 2: not valid JSON'):
        validate_dataset_file(str(path))
    path.write_text('\n'.join(json.dumps(r) for r in rows[:2]))
    assert validate_dataset_file(str(path)) == 2


def test_local_dataset_file_understands_ms_swift_dataset_syntax(tmp_path):
    path = tmp_path / 'apo.jsonl'
    path.write_text('')
    assert local_dataset_file(str(path)) == str(path)
    assert local_dataset_file(f'{path}#100') == str(path)
    assert local_dataset_file('MiaoMiaoYang/CXR-MAX') is None
    assert local_dataset_file(str(tmp_path / 'absent.jsonl')) is None


def test_dpo_only_flags_are_refused_for_apo():
    from types import SimpleNamespace

    from swift_plugin.registration import check_apo_arguments

    def args(**overrides):
        base = dict(packing=False, padding_free=False, ld_alpha=None, loss_weights=None, sequence_parallel_size=1,
                    truncation_strategy='delete', loss_type=None, label_smoothing=0.0)
        return SimpleNamespace(**{**base, **overrides})

    check_apo_arguments(args())
    check_apo_arguments(args(loss_type=['sigmoid']))
    check_apo_arguments(args(label_smoothing=0.3))
    for overrides, flag in [({'padding_free': True}, '--padding_free'), ({'packing': True}, '--packing'),
                            ({'sequence_parallel_size': 2}, '--sequence_parallel_size'),
                            ({'truncation_strategy': 'split'}, '--truncation_strategy split'),
                            ({'loss_type': 'apo_zero'}, '--loss_type apo_zero'),
                            ({'label_smoothing': 0.5}, r'--label_smoothing 0.5 \(it must lie in \[0, 0.5\)\)')]:
        with pytest.raises(ValueError, match=f'--rlhf_type apo does not support: {flag}'):
            check_apo_arguments(args(**overrides))


@pytest.mark.parametrize('names, columns', [
    (['messages', 'rejected', 'images'], {'rejected': 'rejected_response'}),
    (['messages', 'Rejected', 'teachers'], {'REJECTED': 'rejected_response', 'teachers': 'rejected_sources'}),
    (['messages', 'bad', 'worse'], {'bad': 'rejected_response', 'worse': 'rejected_response'}),  # both claim it
    (['messages', 'rejected_response'], {'rejected_response': 'rejected_response', 'absent': 'images'}),
    (['messages', 'rejected'], {}),
])
def test_column_renames_are_ms_swift_renames(names, columns):
    from datasets import Dataset
    from swift.dataset import RowPreprocessor
    renamed = RowPreprocessor.safe_rename_columns(Dataset.from_dict({name: ['x'] for name in names}), columns)
    expected = {old: new for old, new in zip(names, renamed.column_names) if old != new}
    assert column_renames(columns, names) == expected


def test_validate_file_sees_the_columns_after_the_mapping(tmp_path):
    path = tmp_path / 'dpo.jsonl'
    rows = [{'messages': _row()['messages'], 'rejected': ['a', 'b'], 'teachers': ['GPT-5', 'Grok-4']},
            {'messages': _row()['messages'], 'rejected': ['c'], 'teachers': ['GPT-5', 'Grok-4']}]
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    with pytest.raises(APORowError, match=f"^{path} line 1: field 'rejected_response': missing"):
        validate_dataset_file(str(path))
    columns = {'Rejected': 'rejected_response', 'teachers': 'rejected_sources'}
    with pytest.raises(APORowError, match=f"^{path} line 2: field 'rejected_sources': has 2 entries but "
                       'rejected_response has 1 answers'):
        validate_dataset_file(str(path), columns)
    path.write_text(json.dumps(rows[0]) + '\n')
    assert validate_dataset_file(str(path), columns) == 1


def test_rejected_images_shared_or_one_list_per_answer():
    shared = parse_rejected(_row(rejected_response=['a', 'b'], rejected_images=['x.png']))
    assert shared.images == [['x.png'], ['x.png']]
    assert parse_rejected(_row(rejected_response='a', rejected_images='x.png')).images == [['x.png']]
    per_answer = parse_rejected(_row(rejected_response=['a', 'b'], rejected_images=[['x.png'], [{'path': 'y.png'}]]))
    assert per_answer.images == [['x.png'], [{'path': 'y.png'}]]
    assert parse_rejected(_row(rejected_response=['a', 'b'])).images is None


@pytest.mark.parametrize('images, field, problem', [
    ([['x.png']], "'rejected_images'", 'has 1 image lists but rejected_response has 2 answers'),
    (['x.png', ['y.png']], "'rejected_images'", 'mixes images and lists of images'),
    ([['x.png'], [3]], r"'rejected_images\[1\]'", 'found int'),
    (7, "'rejected_images'", 'found int'),
])
def test_bad_rejected_images_name_the_field(images, field, problem):
    with pytest.raises(APORowError, match=f'^data.jsonl line 4: field {field}: .*{problem}'):
        parse_rejected(_row(rejected_response=['a', 'b'], rejected_images=images), where='data.jsonl line 4')


@pytest.mark.parametrize('field', ['rejected_messages', 'rejected_videos', 'rejected_audios', 'rejected_tools',
                                   'rejected_objects'])
def test_other_per_answer_fields_are_refused_not_ignored(field):
    with pytest.raises(APORowError, match=f"^r: field '{field}': not supported by --rlhf_type apo"):
        parse_rejected(_row(rejected_response=['a'], **{field: ['x']}), where='r')
    parse_rejected(_row(rejected_response=['a'], **{field: None}))  # a column other rows fill: absent here


@pytest.mark.parametrize('fits, drop_long_rejected, kept', [
    ([True, True, True], False, [0, 1]),
    ([True, True, False], False, None),
    ([True, True, False], True, [0]),
    ([True, False, True, False], True, [1]),
    ([True, False, False], True, None),  # no rejected answer left
    ([False, True, True], True, None),  # the chosen answer never goes
])
def test_kept_answers(fits, drop_long_rejected, kept):
    assert kept_answers(fits, drop_long_rejected) == kept

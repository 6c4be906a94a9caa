"""Reading and checking APO rows: every bad input names its file, row and field."""
import json

import pytest

from swift_plugin.rows import APORowError, local_dataset_file, parse_rejected, validate_dataset_file

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

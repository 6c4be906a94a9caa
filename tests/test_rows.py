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

"""Chain-of-thought consistency (python -m evaluation consistency): metrics checked by hand, CLI, bad input."""
import json
import types

import pytest

from evaluation.cli import build_parser, consistency_infer_commands, main
from evaluation.consistency import fleiss_kappa, majority_agreement, reasoning_verdict

# Fleiss (1971) / the textbook worked example: 10 subjects, 14 raters, 5 categories -> P_bar 0.378, P_e 0.213,
# kappa 0.210.
TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
         [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_textbook_example():
    counts = [{str(j): v for j, v in enumerate(row) if v} for row in TABLE]
    assert fleiss_kappa(counts) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_by_hand():
    # item 1: 3 x A; item 2: 2 x A, 1 x B. P1 = 1, P2 = (4 + 1 - 3) / 6 = 1/3, P_bar = 2/3;
    # p_A = 5/6, p_B = 1/6, P_e = 26/36; kappa = (24/36 - 26/36) / (10/36) = -0.2
    assert fleiss_kappa([{'A': 3}, {'A': 2, 'B': 1}]) == pytest.approx(-0.2)
    assert fleiss_kappa([{'A': 2}, {'B': 2}]) == pytest.approx(1.0)
    assert fleiss_kappa([{'A': 3}]) is None            # P_e = 1: undefined
    assert fleiss_kappa([{'A': 1}]) is None            # fewer than two ratings


def test_majority_agreement_by_hand():
    assert majority_agreement(['worsening', 'worsening', 'stable']) == pytest.approx(2 / 3)
    assert majority_agreement(['stable', None, None, 'improving']) == pytest.approx(0.5)
    assert majority_agreement(['stable']) == 1.0


def test_reasoning_verdict():
    bad = 'There is no pleural effusion on the current image. Answer: worsening'
    assert reasoning_verdict(bad, 'Pleural effusion', 'worsening') == 'inconsistent'
    good = 'The left pleural effusion is larger than before. Answer: worsening'
    assert reasoning_verdict(good, 'Pleural effusion', 'worsening') == 'consistent'
    assert reasoning_verdict('Answer: stable', 'Pleural effusion', 'stable') is None


def _items(tmp_path):
    path = tmp_path / 'items.jsonl'
    rows = [{'id': 'a', 'images': ['x.jpg'], 'question': 'How has the pleural effusion changed?',
             'observation': 'Pleural effusion', 'label': 'worsening'},
            {'id': 'b', 'images': ['y.jpg'], 'question': 'How has the edema changed?', 'observation': 'Edema',
             'label': 'stable'}]
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


def test_cli_answers(tmp_path, capsys):
    items = _items(tmp_path)
    answers = tmp_path / 'student.jsonl'
    rows = [{'id': 'a', 'response': 'The pleural effusion has increased. Answer: worsening'},
            {'id': 'a', 'response': 'There is no pleural effusion. Answer: worsening'},
            {'id': 'a', 'response': 'Effusion unchanged. Answer: stable'},
            {'id': 'b', 'response': 'Edema is unchanged. Answer: stable'},
            {'id': 'b', 'response': 'Edema is unchanged. Answer: stable'}]
    answers.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    out = tmp_path / 'out'
    assert main(['consistency', '--answers', str(answers), '--dataset', str(items), '--out', str(out)]) == 0
    result = json.loads((out / 'student.consistency.json').read_text())
    assert result['samples'] == 5
    assert result['majority_agreement'] == pytest.approx((2 / 3 + 1) / 2)
    assert result['observations']['Edema']['majority_agreement'] == 1.0
    assert result['reasoning_answer']['inconsistent'] == 1
    assert [(r['id'], r['sample']) for r in result['inconsistent_items']] == [('a', 1)]
    assert (out / 'student.consistency.md').exists()
    assert not [p for p in out.iterdir() if p.name.startswith('.')]


def test_cli_bad_answer_names_file_line_field(tmp_path, capsys):
    items = _items(tmp_path)
    answers = tmp_path / 'bad.jsonl'
    answers.write_text(json.dumps({'id': 'a', 'response': 'ok'}) + '\n' + json.dumps({'id': 'a', 'response': 3}) + '\n')
    assert main(['consistency', '--answers', str(answers), '--dataset', str(items), '--out', str(tmp_path / 'o')]) != 0
    err = capsys.readouterr().err
    assert 'bad.jsonl' in err and '2' in err and 'response' in err
    assert not (tmp_path / 'o' / 'bad.consistency.json').exists()


def test_model_sampling_commands(tmp_path):
    args = build_parser().parse_args(['consistency', '--model', 'm', '--samples', '3', '--temperature', '0.9',
                                      '--seed', '7', '--swift-args', '--max_batch_size 4', '--dataset', 'd',
                                      '--out', 'o'])
    runs = consistency_infer_commands(args, 'req.jsonl', str(tmp_path))
    assert [r[0] for r in runs] == [7, 8, 9]
    assert runs[1][2] == '--max_batch_size 4 --temperature 0.9 --seed 8'
    assert len({r[1] for r in runs}) == 3


def test_model_path_builds_swift_commands(tmp_path, monkeypatch):
    """--model runs swift infer once per sample with its own seed (no model run: subprocess is recorded)."""
    import evaluation.swift_infer as si
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if 'infer' in cmd:      # answer every request with one swift-style result row
            result = cmd[cmd.index('--result_path') + 1]
            reqs = [json.loads(l) for l in open(cmd[cmd.index('--val_dataset') + 1])]
            with open(result, 'w') as h:
                for r in reqs:
                    h.write(json.dumps({**r, 'response': 'Answer: stable'}) + '\n')
        return types.SimpleNamespace(returncode=0, stdout='False\n')
    monkeypatch.setattr(si.subprocess, 'run', fake_run)
    items = _items(tmp_path)
    (tmp_path / 'x.jpg').write_bytes(b'x')
    (tmp_path / 'y.jpg').write_bytes(b'y')
    out = tmp_path / 'out'
    assert main(['consistency', '--model', str(tmp_path / 'sft'), '--samples', '2', '--temperature', '0.8',
                 '--seed', '3', '--infer-backend', 'transformers', '--dataset', str(items), '--out', str(out)]) == 0
    infer = [c for c in calls if 'infer' in c]
    assert len(infer) == 2
    for k, cmd in enumerate(infer):
        assert cmd[-4:] == ['--temperature', '0.8', '--seed', str(3 + k)]   # after (overriding) the greedy default
    result = json.loads((out / 'sft.consistency.json').read_text())
    assert result['samples'] == 4 and result['majority_agreement'] == 1.0


def test_teachers_per_teacher_and_between(tmp_path):
    rows = [{'study_id': 1, 'subject_id': 9, 'image_path': 'a.jpg', 'question': 'basis for pleural effusion?',
             'model': 'T1', 'response': 'Findings: blunting, there is a pleural effusion. Impression: pleural effusion.',
             'labels': ['Pleural Effusion']},
            {'study_id': 1, 'subject_id': 9, 'image_path': 'a.jpg', 'question': 'basis for pleural effusion?',
             'model': 'T2', 'response': 'Findings: no pleural effusion. Impression: pleural effusion.',
             'labels': ['Pleural Effusion']}]
    path = tmp_path / 'cxr.jsonl'
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    out = tmp_path / 'out'
    assert main(['consistency', '--teachers', str(path), '--out', str(out)]) == 0
    result = json.loads((out / 'cxr.teachers.consistency.json').read_text())
    t1, t2 = result['teachers']['T1'], result['teachers']['T2']
    assert (t1['checked'], t1['inconsistent'], t1['consistency_rate']) == (1, 0, 1.0)
    assert (t2['checked'], t2['inconsistent']) == (1, 1)
    assert t2['inconsistent_items'][0]['conflicts'] == ['Pleural Effusion']
    # whole-trace calls on Pleural Effusion: both positive (T2's impression decides) -> 2/2 agree; kappa undefined
    eff = result['between_teachers']['Pleural Effusion']
    assert (eff['studies'], eff['majority_agreement'], eff['fleiss_kappa']) == (1, 1.0, None)


def test_answers_swift_rows_one_sample_per_file(tmp_path):
    items = _items(tmp_path)
    from evaluation.items import request_row, read_items
    from evaluation.labels import load_label_set
    reqs = [request_row(i) for i in read_items(str(items), load_label_set(None))]
    files = []
    for k, text in enumerate(['Answer: stable', 'Answer: worsening']):
        f = tmp_path / f's{k}.jsonl'
        f.write_text(''.join(json.dumps({**r, 'response': text}) + '\n' for r in reqs))
        files.append(str(f))
    out = tmp_path / 'out'
    assert main(['consistency', '--answers', *files, '--name', 'x', '--dataset', str(items), '--out', str(out)]) == 0
    result = json.loads((out / 'x.consistency.json').read_text())
    assert result['samples'] == 4 and result['majority_agreement'] == 0.5
    # per observation: one item each with [stable, worsening] -> kappa = (0 - 0.5) / 0.5 = -1
    assert result['observations']['Edema']['fleiss_kappa'] == pytest.approx(-1.0)


def test_unknown_id_is_named(tmp_path, capsys):
    items = _items(tmp_path)
    answers = tmp_path / 'ans.jsonl'
    answers.write_text(json.dumps({'id': 'zz', 'response': 'Answer: stable'}) + '\n')
    assert main(['consistency', '--answers', str(answers), '--dataset', str(items), '--out', str(tmp_path / 'o')]) != 0
    err = capsys.readouterr().err
    assert 'ans.jsonl' in err and "'id'" in err and 'zz' in err

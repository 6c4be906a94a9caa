"""evaluation items: the MS-CXR-T CSV and CheXpert/NIH-style labels CSVs made into items (synthetic files, no model)."""
import json

import pytest

from datafiles import DataError
from evaluation.cli import main
from evaluation.datasets import build_items, csv_kind, mimic_image

HEADER = ('dicom_id,previous_dicom_id,study_id,previous_study_id,subject_id,consolidation_progression,'
          'edema_progression,pleural_effusion_progression,pneumonia_progression,pneumothorax_progression\n')


def _image(root, rel):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'\xff\xd8fake')


def _ms_cxr_t(tmp_path, rows=None):
    root = tmp_path / 'mimic'
    _image(root, 'files/p10/p10000032/s50000001/aaa.jpg')
    _image(root, 'files/p10/p10000032/s50000002/bbb.jpg')
    _image(root, 'files/p11/p11000001/s51000001/ccc.jpg')
    _image(root, 'files/p11/p11000001/s51000002/ddd.jpg')
    csv = tmp_path / 'ms_cxr_t.csv'
    csv.write_text(HEADER + ''.join(rows or [
        'bbb,aaa,50000002,50000001,10000032,,,worsening,,stable\n',
        'files/p11/p11000001/s51000002/ddd.jpg,ccc,s51000002,s51000001,11000001,improving,,,,\n']))
    return csv, root


def test_mimic_layout():
    assert mimic_image('/r', '10000032', 's50000002', 'bbb') == 'files/p10/p10000032/s50000002/bbb.jpg'
    assert mimic_image('/r', '1', '2', 'files/p1/x.jpg') == 'files/p1/x.jpg'
    # a path without the extension, as some MS-CXR-T releases write dicom_id, is the same image
    assert mimic_image('/r', '10000032', '50000002', 'files/p10/p10000032/s50000002/bbb') == \
        'files/p10/p10000032/s50000002/bbb.jpg'


def test_ms_cxr_t_items(tmp_path):
    csv, root = _ms_cxr_t(tmp_path)
    assert csv_kind(str(csv)) == 'ms-cxr-t'
    items, report = build_items(str(csv), str(root), 'ms-cxr-t')
    assert [(i['id'], i['label']) for i in items] == [('bbb:pleural_effusion', 'worsening'),
                                                      ('bbb:pneumothorax', 'stable'), ('ddd:consolidation', 'improving')]
    assert items[0]['images'] == ['files/p10/p10000032/s50000001/aaa.jpg', 'files/p10/p10000032/s50000002/bbb.jpg']
    assert items[2]['images'][1] == 'files/p11/p11000001/s51000002/ddd.jpg'
    assert items[0]['observation'] == 'Pleural effusion' and report['missing'] == []


def test_ms_cxr_t_dicom_path_without_extension_is_found(tmp_path):
    csv, root = _ms_cxr_t(tmp_path, ['files/p11/p11000001/s51000002/ddd,ccc,s51000002,s51000001,11000001,improving,,,,\n'])
    items, report = build_items(str(csv), str(root), 'ms-cxr-t')
    assert report['missing'] == [] and [i['id'] for i in items] == ['ddd:consolidation']
    assert items[0]['images'][1] == 'files/p11/p11000001/s51000002/ddd.jpg'


@pytest.mark.parametrize('header, row, message', [
    (HEADER.replace('edema_progression', 'edma_progression'), None, "line 1: field 'edma_progression': unknown column"),
    (HEADER.replace('subject_id,', ''), None, "line 1: field 'subject_id': missing column"),
    (HEADER, 'bbb,aaa,50000002,50000001,10000032,,,worse,,\n', "line 2: field 'pleural_effusion_progression': 'worse'"),
    (HEADER, 'bbb,aaa,50000002,,10000032,,,stable,,\n', "line 2: field 'previous_study_id': empty"),
])
def test_ms_cxr_t_errors_name_file_line_field(tmp_path, header, row, message):
    csv, root = _ms_cxr_t(tmp_path)
    lines = csv.read_text().splitlines(True)
    csv.write_text(header + (row or ''.join(lines[1:])))
    with pytest.raises(DataError) as error:
        build_items(str(csv), str(root), 'ms-cxr-t')
    assert str(error.value).startswith(f'{csv}: {message}')


def test_missing_images_error_or_skip(tmp_path, capsys):
    csv, root = _ms_cxr_t(tmp_path)
    (root / 'files/p10/p10000032/s50000001/aaa.jpg').unlink()
    with pytest.raises(DataError, match=r'1 image\(s\) not found .*aaa.jpg .*line 2.*--skip-missing'):
        build_items(str(csv), str(root), 'ms-cxr-t')
    items, report = build_items(str(csv), str(root), 'ms-cxr-t', skip_missing=True)
    assert [i['id'] for i in items] == ['ddd:consolidation'] and report['skipped_items'] == 2
    out = tmp_path / 'items.jsonl'
    assert main(['items', '--ms-cxr-t', str(csv), '--image-root', str(root), '--out', str(out)]) == 2
    assert 'aaa.jpg' in capsys.readouterr().err and not out.exists()
    assert main(['items', '--ms-cxr-t', str(csv), '--image-root', str(root), '--out', str(out), '--skip-missing']) == 0
    assert '1 image(s) missing, 2 item(s) skipped' in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 1


def test_classify_csv_on_the_fly_equals_items_file(tmp_path):
    csv, root = _ms_cxr_t(tmp_path)
    items = tmp_path / 'items.jsonl'
    assert main(['items', '--ms-cxr-t', str(csv), '--image-root', str(root), '--out', str(items)]) == 0
    answers = tmp_path / 'm.jsonl'
    answers.write_text(''.join(json.dumps(r) + '\n' for r in [
        {'id': 'bbb:pleural_effusion', 'answer': 'The effusion has increased.'},
        {'id': 'bbb:pneumothorax', 'answer': 'Improving.'}, {'id': 'ddd:consolidation', 'answer': 'improved'}]))
    results = []
    for dataset, out in ((csv, 'a'), (items, 'b')):
        assert main(['classify', '--answers', str(answers), '--dataset', str(dataset), '--image-root', str(root),
                     '--out', str(tmp_path / out), '--n-boot', '50']) == 0
        results.append(json.loads((tmp_path / out / 'm.json').read_text()))
    assert results[0]['average']['correct'] == 2
    assert results[0]['observations'] == results[1]['observations']
    assert results[0]['average'] == results[1]['average']


LABELS = ('Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Cardiomegaly,Edema,Pleural Effusion\n'
          'valid/p1/s1/view1.jpg,Male,60,Frontal,AP,,1.0,-1.0,0.0\n'
          'valid/p2/s1/view1.jpg,Female,50,Frontal,PA,1.0,,,\n')


@pytest.mark.parametrize('policy, expected', [
    ('skip', {'Cardiomegaly': 'present', 'Pleural Effusion': 'absent', 'No Finding': 'present'}),
    ('present', {'Cardiomegaly': 'present', 'Edema': 'present', 'Pleural Effusion': 'absent', 'No Finding': 'present'}),
    ('absent', {'Cardiomegaly': 'present', 'Edema': 'absent', 'Pleural Effusion': 'absent', 'No Finding': 'present'}),
])
def test_labels_csv_uncertain_policy(tmp_path, policy, expected):
    csv = tmp_path / 'valid.csv'
    csv.write_text(LABELS)
    _image(tmp_path, 'valid/p1/s1/view1.jpg')
    _image(tmp_path, 'valid/p2/s1/view1.jpg')
    assert csv_kind(str(csv)) == 'labels-csv'
    items, report = build_items(str(csv), str(tmp_path), 'labels-csv', uncertain=policy)
    assert {i['observation']: i['label'] for i in items} == expected and report['uncertain'] == 1
    assert items[0]['id'] == 'valid/p1/s1/view1.jpg:cardiomegaly'


def test_labels_csv_errors_and_classify(tmp_path, capsys):
    csv = tmp_path / 'valid.csv'
    _image(tmp_path, 'valid/p1/s1/view1.jpg')
    _image(tmp_path, 'valid/p2/s1/view1.jpg')
    csv.write_text(LABELS.replace('Cardiomegaly', 'Cardiomegally'))
    with pytest.raises(DataError, match=r"valid.csv: line 1: field 'Cardiomegally': unknown column"):
        build_items(str(csv), str(tmp_path), 'labels-csv')
    csv.write_text(LABELS.replace(',-1.0,', ',maybe,'))
    with pytest.raises(DataError, match=r"valid.csv: line 2: field 'Edema': expected 1, 0, -1 or blank, found 'maybe'"):
        build_items(str(csv), str(tmp_path), 'labels-csv')
    csv.write_text(LABELS)
    items = tmp_path / 'items.jsonl'
    assert main(['items', '--labels-csv', str(csv), '--image-root', str(tmp_path), '--out', str(items)]) == 0
    answers = tmp_path / 'm.jsonl'
    answers.write_text(''.join(json.dumps(r) + '\n' for r in [
        {'id': 'valid/p1/s1/view1.jpg:cardiomegaly', 'answer': 'The heart is enlarged: cardiomegaly is present.'},
        {'id': 'valid/p1/s1/view1.jpg:pleural_effusion', 'answer': 'No pleural effusion.'},
        {'id': 'valid/p2/s1/view1.jpg:no_finding', 'answer': 'absent'}]))
    results = []
    for dataset, out in ((csv, 'a'), (items, 'b')):
        argv = ['classify', '--answers', str(answers), '--dataset', str(dataset), '--image-root', str(tmp_path),
                '--out', str(tmp_path / out), '--n-boot', '50']
        assert main(argv + ([] if dataset == csv else ['--labels', 'presence'])) == 0
        results.append(json.loads((tmp_path / out / 'm.json').read_text()))
    assert results[0]['average']['n'] == 3 and results[0]['average']['correct'] == 2
    assert results[0]['observations'] == results[1]['observations']

"""The clinical text readers (issue 21): the two labelled suites with their bars, the CheXpert conventions and the
structures LLMs write, the vocabulary file (extend, override, errors), --explain, bad input, and the package
layout (clinical_text imports neither data_prep nor evaluation; data_prep does not import evaluation).

The suites and how they are counted: tests/reader_suites.py (``python tests/reader_suites.py`` prints the table).
"""
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clinical_text import (OBSERVATIONS, FindingsReader, VocabularyError, explain, load_vocabulary, read_findings,
                           vocabulary_from_dict)
from evaluation.labels import MS_CXR_T, TEMPORAL_CLASSES
from evaluation.parser import parse_answer
from reader_suites import CLASSES, load, measure, table

REPO = Path(__file__).resolve().parents[1]
# Bars on the held-out parts (issue 21; the blind suites: issue 28's targets for text nobody here wrote, less a
# margin for the suites' size); the dev parts must clear them too.
BARS = {'llm': {'accuracy': 0.95, 'present_vs_not': 0.97}, 'report': {'kappa_macro': 0.85},
        'blind report': {'accuracy': 0.95, 'present_vs_not': 0.98},
        'blind llm': {'accuracy': 0.93, 'present_vs_not': 0.96}}


@pytest.mark.parametrize('style', sorted(BARS))
def test_suites_are_large_enough_and_split(style):
    rows = load(style)
    assert len({r['text'] for r in rows}) == len(rows), style
    calls = {split: sum(len(r['labels']) for r in rows if r['split'] == split) for split in ('dev', 'heldout')}
    least = 500 if style.startswith('blind') else 130
    assert min(calls.values()) >= least, (style, calls)
    labelled = {c for r in rows for c in r['labels'].values()}
    assert labelled >= {'positive', 'negative', 'uncertain'}, style
    covered = {o for r in rows for o in r['labels']}
    assert covered == set(OBSERVATIONS) if 'report' in style else len(covered) >= 12, (style, covered)


@pytest.mark.parametrize('style', sorted(BARS))
@pytest.mark.parametrize('split', ['dev', 'heldout'])
def test_reader_on_the_suites(style, split):
    m = measure([r for r in load(style) if r['split'] == split])
    print(f'\n{style} {split}: {m["calls"]} calls, 4-class {m["accuracy"]:.3f}, present-vs-not '
          f'{m["present_vs_not"]:.3f}, kappa macro {m["kappa_macro"]:.3f}, per class {m["per_class"]}')
    for name, bar in BARS[style].items():
        # the wrong calls of a held-out part are not printed: whoever writes rules must not read them
        assert m[name] >= bar, (name, m[name], m['wrong'] if split == 'dev' else f'{len(m["wrong"])} wrong calls')


def test_table_names_every_part_and_class():
    text = table()
    for part in ('| report | dev |', '| report | heldout |', '| llm | dev |', '| llm | heldout |',
                 '| blind report | heldout |', '| blind llm | heldout |', *CLASSES):
        assert part in text


# The conventions of docs/readers.md, one case each (sentences of the kinds the issue lists, not from the suites).
CONVENTIONS = [
    # CheXpert labeler
    ('No pleural effusion or pneumothorax.', {'Pleural Effusion': 'negative', 'Pneumothorax': 'negative'}),
    ('Lungs are clear of focal consolidation, effusion or pneumothorax.',
     {'Consolidation': 'negative', 'Pleural Effusion': 'negative', 'Pneumothorax': 'negative'}),
    ('Free of effusion.', {'Pleural Effusion': 'negative'}),
    ('Findings are suggestive of pneumonia.', {'Pneumonia': 'uncertain'}),
    ('Pneumothorax cannot be excluded.', {'Pneumothorax': 'uncertain'}),
    ('Pneumothorax has not been ruled out.', {'Pneumothorax': 'uncertain'}),
    ('Nondisplaced rib fractures may be occult.', {'Fracture': 'uncertain'}),      # a modal after the finding
    ('Pneumonia versus atelectasis.', {'Pneumonia': 'uncertain', 'Atelectasis': 'uncertain'}),
    ('Atelectasis or pneumonia at the left base.', {'Pneumonia': 'uncertain', 'Atelectasis': 'uncertain'}),
    ('Opacity in the right lower lobe, atelectasis vs pneumonia.',
     {'Lung Opacity': 'positive', 'Atelectasis': 'uncertain', 'Pneumonia': 'uncertain'}),
    ('Borderline heart size.', {'Cardiomegaly': 'uncertain'}),
    ('Heart size at the upper limits of normal.', {'Cardiomegaly': 'negative'}),
    ('Mild pulmonary vascular congestion.', {'Edema': 'uncertain'}),
    ('No significant change in the small left effusion.', {'Pleural Effusion': 'positive'}),
    ('Unchanged right pleural effusion. Stable cardiomegaly.',
     {'Pleural Effusion': 'positive', 'Cardiomegaly': 'positive'}),
    ('Interval removal of the left PICC.', {'Support Devices': 'negative'}),
    ('Resolved pneumothorax.', {'Pneumothorax': 'negative'}),
    ('The effusion has nearly resolved.', {'Pleural Effusion': 'positive'}),
    ('Pleural effusion is unlikely.', {'Pleural Effusion': 'negative'}),
    ('No findings to suggest pneumonia.', {'Pneumonia': 'negative'}),
    ('No pneumothorax, small left effusion is present.', {'Pneumothorax': 'negative', 'Pleural Effusion': 'positive'}),
    ('No evidence of pneumothorax, although a small one cannot be excluded.', {'Pneumothorax': 'uncertain'}),
    ('There is no consolidation; however, there is a small effusion.',
     {'Consolidation': 'negative', 'Pleural Effusion': 'positive'}),
    ("There isn't a pleural effusion.", {'Pleural Effusion': 'negative'}),
    ('Mediastinum: not widened', {'Enlarged Cardiomediastinum': 'negative'}),
    ('Mediastinum: No widening. Heart: no enlargement.',
     {'Enlarged Cardiomediastinum': 'negative', 'Cardiomegaly': 'negative'}),
    ('Heart – normal size', {'Cardiomegaly': 'negative'}),
    ('Cardiomediastinal silhouette is enlarged.', {'Enlarged Cardiomediastinum': 'positive'}),
    ('Heart size: normal\nMediastinal contour: normal',     # a statement does not run across lines
     {'Cardiomegaly': 'negative', 'Enlarged Cardiomediastinum': 'negative'}),
    ('Pericardial effusion.', {}),
    ('INDICATION: cough, evaluate for pneumonia.\nFINDINGS: Lungs are clear. No pneumothorax.',
     {'Pneumothorax': 'negative'}),
    ('HISTORY: s/p chest tube removal. COMPARISON: small pneumothorax yesterday. FINDINGS: No pneumothorax.',
     {'Pneumothorax': 'negative'}),
    ('Cardiac and mediastinal silhouettes are unremarkable.',
     {'Cardiomegaly': 'negative', 'Enlarged Cardiomediastinum': 'negative'}),
    ('Heart size and pulmonary vascularity are normal.', {'Cardiomegaly': 'negative'}),
    ('Clinical correlation for pneumonia is recommended.', {'Pneumonia': 'uncertain'}),
    ('The cardiomediastinal and hilar contours are normal.', {'Enlarged Cardiomediastinum': 'negative'}),
    ('Tiny left pneumothorax is difficult to exclude.', {'Pneumothorax': 'uncertain'}),
    # structures LLMs write
    ('Pleural effusion: None.', {'Pleural Effusion': 'negative'}),
    ('- Pneumothorax: no', {'Pneumothorax': 'negative'}),
    ('Edema: absent', {'Edema': 'negative'}),
    ('Devices: none', {'Support Devices': 'negative'}),
    ('Edema — equivocal', {'Edema': 'uncertain'}),
    ('**Pneumothorax** - ✅ present at the right apex', {'Pneumothorax': 'positive'}),
    ('Consolidation ✗', {'Consolidation': 'negative'}),
    ('❌ Pneumothorax', {'Pneumothorax': 'negative'}),
    ('- [x] Support devices (ET tube)\n- [ ] Pneumothorax',
     {'Support Devices': 'positive', 'Pneumothorax': 'negative'}),
    ('| Cardiomegaly | No |', {'Cardiomegaly': 'negative'}),
    ('| Pneumonia | Cannot rule out |', {'Pneumonia': 'uncertain'}),
    ('| Finding | Present |\n|---|---|\n| Edema | ✗ |', {'Edema': 'negative'}),
    ('| | Present | Absent |\n|---|---|---|\n| Effusion | | ✓ |\n| Cardiomegaly | ✓ | |',
     {'Pleural Effusion': 'negative', 'Cardiomegaly': 'positive'}),
    ('{"pneumothorax": false, "pleural_effusion": "present", "edema": "possible"}',
     {'Pneumothorax': 'negative', 'Pleural Effusion': 'positive', 'Edema': 'uncertain'}),
    ('{"pneumothorax": {"present": false}, "pleural_effusion": {"present": true, "side": "left"}}',
     {'Pneumothorax': 'negative', 'Pleural Effusion': 'positive'}),
    ('<think>Maybe pneumonia.</think>No pneumonia.', {'Pneumonia': 'negative'}),
    ('◁think▷possible effusion◁/think▷The lungs are clear; no effusion.', {'Pleural Effusion': 'negative'}),
    ('Differential diagnosis:\n1. Pneumonia\n2. Atelectasis', {'Pneumonia': 'uncertain', 'Atelectasis': 'uncertain'}),
    ('✓ No pneumothorax', {'Pneumothorax': 'negative'}),
    ('{"positive_findings": ["atelectasis"], "negative_findings": ["pneumothorax", "pleural effusion"]}',
     {'Atelectasis': 'positive', 'Pneumothorax': 'negative', 'Pleural Effusion': 'negative'}),
    ('Absent: pneumothorax, edema.\nPresent: small left effusion.',
     {'Pneumothorax': 'negative', 'Edema': 'negative', 'Pleural Effusion': 'positive'}),
    ('Effusion (-)\nPneumothorax (+)', {'Pleural Effusion': 'negative', 'Pneumothorax': 'positive'}),
    ('**2. Pleural Effusion:**\n- Blunting of the left costophrenic angle suggests a small pleural effusion.',
     {'Pleural Effusion': 'uncertain'}),              # a key alone on its line is a topic
    ('## Pneumothorax\nThe apex is partly hidden by the clavicle.', {}),
    ('Pneumothorax:\n- None', {'Pneumothorax': 'negative'}),
    ('- **Pneumothorax**\n  - Present: no\n  - Comment: markings reach the apex', {'Pneumothorax': 'negative'}),
    ('**Pleural Effusion:**\n   - **Presence:** Yes\n   - **Location:** left', {'Pleural Effusion': 'positive'}),
    ('Findings:\n- Pleural effusion\n- Cardiomegaly\n  - mild',
     {'Pleural Effusion': 'positive', 'Cardiomegaly': 'positive'}),
    ('Although the question mentions pneumonia, I do not see consolidation.', {'Consolidation': 'negative'}),
    ('Without seeing the image, I cannot confirm pneumonia.', {}),    # a refusal says nothing of the image
    ("I'm unable to view the image, but typically pneumonia shows consolidation, while atelectasis shows volume "
     'loss.', {}),
    ('I cannot view images, but based on the description, findings suggest pulmonary edema.', {'Edema': 'uncertain'}),
    ('To determine the basis for the diagnosis of effusion and pneumothorax, look at the angles.\n'
     '**Pneumothorax**: Look for a visceral pleural line. None is visible, so there is no pneumothorax.',
     {'Pneumothorax': 'negative'}),
    ('| Finding | Evidence | Conclusion |\n|---|---|---|\n| Pleural effusion | Angles sharp | Absent |\n'
     '| Atelectasis | Linear band at the left base | Present |',
     {'Pleural Effusion': 'negative', 'Atelectasis': 'positive'}),
    ('Is there a pneumothorax?', {}),
    ('Is there a pneumothorax? No.', {'Pneumothorax': 'negative'}),
    ('Q: Is the heart enlarged?\nA: Yes.', {'Cardiomegaly': 'positive'}),
    ('Consult your doctor if you suspect pneumonia.', {}),
    ('If symptoms persist, note that a small effusion is present.', {'Pleural Effusion': 'positive'}),
    ('Signs of pneumonia would include consolidation.', {}),
    ('I cannot determine whether a pneumothorax is present.', {'Pneumothorax': 'uncertain'}),
]


# The shapes issue 28 reported as misread on text nobody here wrote (new sentences of those shapes; all calls that
# are not listed must be "not mentioned").
ASSERTED_NOT_NAMED = [
    # what the writer looked for, checked, was asked or offered as options
    ('I reviewed both bases for an effusion and the angles are crisp, so there is none.',
     {'Pleural Effusion': 'negative'}),
    ('I looked at the left base for an effusion and there is a small one.', {'Pleural Effusion': 'positive'}),
    ('Apices checked for a pneumothorax; none.', {'Pneumothorax': 'negative'}),
    # numbered steps lead keys like list marks: the key names its line's topic, the value decides
    ('Step 1: consolidation: no focal consolidation.\nStep 2: cardiomegaly: the heart is enlarged.',
     {'Consolidation': 'negative', 'Cardiomegaly': 'positive'}),
    ('Step 1: consolidation: no focal consolidation. Step 2: pleural effusion: no effusion. Step 3: support '
     'devices: no lines or tubes. Conclusion: cardiomegaly.',
     {'Consolidation': 'negative', 'Pleural Effusion': 'negative', 'Support Devices': 'negative',
      'Cardiomegaly': 'positive'}),
    ('I checked both apices for a pneumothorax and went over the bases.', {}),
    ('Reviewed and not present: edema (no Kerley lines), nodules (none seen), fractures.',
     {'Edema': 'negative', 'Lung Lesion': 'negative', 'Fracture': 'negative'}),
    ('Which is seen? A) Pneumothorax B) Consolidation C) Effusion - no\nAnswer: A',
     {'Pneumothorax': 'positive', 'Pleural Effusion': 'negative'}),
    ('All of the following are seen EXCEPT: A) Effusion B) Pneumothorax C) Atelectasis. Answer: B',
     {'Pneumothorax': 'negative'}),
    ('[{"finding": "edema", "status": "absent"}, {"finding": "pneumothorax", "status": "present"}]',
     {'Edema': 'negative', 'Pneumothorax': 'positive'}),
    ('No hardware.', {'Support Devices': 'negative'}),
    ('_Tubes/lines._ None.', {'Support Devices': 'negative'}),
    ('No pacer, catheters or drains are seen.', {'Support Devices': 'negative'}),
    ('There is nothing to suggest air around the lung (pneumothorax).', {'Pneumothorax': 'negative'}),
    ('IMPRESSION: Resolved right upper lobe pneumonia.', {'Pneumonia': 'negative'}),
    # differentials and comparisons
    ('Differential:\n1. Pneumonia - most likely, given the dense consolidation\n2. Atelectasis with mucus plugging\n'
     '3. Edema - cannot be excluded', {'Pneumonia': 'uncertain', 'Consolidation': 'positive',
                                       'Atelectasis': 'uncertain', 'Edema': 'uncertain'}),
    ('Atelectasis vs pneumonia.', {'Atelectasis': 'uncertain', 'Pneumonia': 'uncertain'}),
    ("I can't separate atelectasis from consolidation.", {'Atelectasis': 'uncertain', 'Consolidation': 'uncertain'}),
    ('Bilateral opacities. I lean toward edema.', {'Lung Opacity': 'positive', 'Edema': 'uncertain'}),
    ('This looks more like edema than pneumonia.', {'Edema': 'uncertain', 'Pneumonia': 'uncertain'}),
    ('It favours pneumonia; atelectasis must also be considered.',
     {'Pneumonia': 'uncertain', 'Atelectasis': 'uncertain'}),
    ('A pattern commonly associated with pulmonary edema.', {'Edema': 'uncertain'}),
    ('Effusion vs pleural thickening at the left base.',
     {'Pleural Effusion': 'uncertain', 'Pleural Other': 'uncertain'}),
    # negatives said of the heart, the mediastinum, the pleura
    ('The heart does not appear big.', {'Cardiomegaly': 'negative'}),
    ('The mediastinum is of normal width.', {'Enlarged Cardiomediastinum': 'negative'}),
    ('Pleura not thickened.', {'Pleural Other': 'negative'}),
    ('The heart, XXXX and lungs are unremarkable.', {'Cardiomegaly': 'negative'}),
    ('Cardiac silhouette of normal size and shape.', {'Cardiomegaly': 'negative'}),
    ('Normal heart contour.', {'Cardiomegaly': 'negative'}),
    ('A lead projects over the heart.', {'Support Devices': 'positive'}),
    # positives and hedges
    ('Unchanged mediastinal silhouette.', {'Enlarged Cardiomediastinum': 'uncertain'}),
    ('Prominence of the superior mediastinum.', {'Enlarged Cardiomediastinum': 'positive'}),
    ('A left-sided catheter ending in the SVC.', {'Support Devices': 'positive'}),
    ('Surgical clips in the left axilla.', {'Support Devices': 'positive'}),
    ('Sternal wires are intact.', {'Support Devices': 'positive'}),
    ('Spinal fusion hardware.', {'Support Devices': 'positive'}),
    ('Findings consistent with congestive heart failure.', {'Edema': 'positive', 'Cardiomegaly': 'uncertain'}),
    # a reasoning block decides what its conclusion does not name
    ('<think>Heart normal. Maybe a small effusion?</think>\nNo pleural effusion.',
     {'Cardiomegaly': 'negative', 'Pleural Effusion': 'negative'}),
]


@pytest.mark.parametrize('text, expected', CONVENTIONS + ASSERTED_NOT_NAMED)
def test_conventions(text, expected):
    calls = read_findings(text)
    assert {o: c for o, c in calls.items() if c and o != 'No Finding'} == expected


@pytest.mark.parametrize('text, call', [
    ('Heart size is normal. Degenerative spurring of the thoracic spine.', 'negative'),
    ('Lungs clear. Calcified aortic knob.', 'negative'),
    ('Atherosclerotic change of the aorta. No effusion.', 'negative'),
    ('Vertebral endplate change. Lungs are clear.', 'negative'),
    ('Lungs are clear. ET tube in good position.', 'positive'),
    ("I can't see the image, so I cannot tell you whether there is a pneumothorax.", None),
    ('Images are not available for interpretation at this time.', None),
])
def test_no_finding_from_other_findings_and_texts_that_say_nothing(text, call):
    assert read_findings(text)['No Finding'] == call


@pytest.mark.parametrize('text, call', [
    ('Endotracheal tube in place. No effusion.', 'positive'),
    ('Possible small effusion.', 'negative'),
    ('Emphysema. Otherwise normal chest.', 'negative'),
    ('Calcified granuloma in the left upper lobe.', 'negative'),
    ('Mild thoracic scoliosis. Lungs clear.', 'negative'),
    ('Mild blunting of the left costophrenic angle.', 'negative'),
    ('No emphysema. Lungs clear.', 'positive'),
])
def test_no_finding(text, call):
    assert read_findings(text)['No Finding'] == call


@pytest.mark.parametrize('text', [None, '', '   \n ', b'\xff\xfe\x00garbage \x80\x81', 'Pas d\'épanchement pleural.',
                                  '肺野清晰，无胸腔积液。', '\x00\x01\x02' * 1000])
def test_bad_input_gives_a_defined_result(text):
    calls = read_findings(text)
    assert set(calls) == set(OBSERVATIONS)
    assert set(calls.values()) <= {None, 'positive', 'negative', 'uncertain'}
    if not text or not str(text).strip():
        assert set(calls.values()) == {None}


def test_huge_trace_is_read_in_bounded_time():
    block = 'Small left pleural effusion and no pneumothorax, with bibasilar atelectasis ' * 2700   # ~200,000 chars
    for text in (block, block.replace(' ', '')[:200_000], '| a ' * 50_000):
        start = time.perf_counter()
        calls = read_findings(text)
        assert time.perf_counter() - start < 20, len(text)
        assert set(calls) == set(OBSERVATIONS)
    assert read_findings(block)['Pleural Effusion'] == 'positive'


def test_explain_names_the_cue_and_the_span():
    d = explain('Small bilateral effusions. No pneumothorax, but a small one cannot be excluded.')
    assert d['Pneumothorax'].call == 'uncertain' and d['Pneumothorax'].cue == 'cannot be excluded'
    assert 'post_uncertainty' in d['Pneumothorax'].rule
    assert d['Pleural Effusion'].span == 'effusions' and d['Pleural Effusion'].rule == 'plain mention'
    d = explain('<think>Maybe a small effusion.</think>No pleural effusion.')
    assert d['Pleural Effusion'].call == 'negative' and 'conclusion after the reasoning' in d['Pleural Effusion'].rule
    d = explain('| Edema | ❌ |')
    assert (d['Edema'].call, d['Edema'].cue) == ('negative', '❌')


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, '-m', 'data_prep', *args], capture_output=True, text=True, cwd=REPO,
                          input=stdin, timeout=120)


def test_findings_cli_explain(tmp_path):
    out = _cli('findings', '--explain', 'Pleural effusion: None. Possible left lower lobe pneumonia.')
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0] + (' ' + line.split()[1] if line.split()[1][0].isupper() else ''): line
             for line in out.stdout.splitlines()}
    assert 'negative' in lines['Pleural Effusion'] and 'cue "None"' in lines['Pleural Effusion']
    assert 'uncertain' in lines['Pneumonia'] and 'cue "Possible"' in lines['Pneumonia']
    assert 'not mentioned' in lines['Pneumothorax']
    trace = tmp_path / 'trace.txt'
    trace.write_bytes('Edema: absent\n'.encode() + b'\xff')
    out = _cli('findings', '--json', str(trace))
    assert out.returncode == 0 and json.loads(out.stdout)['Edema'] == 'negative', out.stderr


def test_vocabulary_file_extends_and_overrides(tmp_path):
    text = 'Pleural effusion: nope. Bibasilar atelectasis is possible. A small hydropneumo is seen.'
    base = read_findings(text)
    assert base['Pleural Effusion'] is not None and base['Atelectasis'] == 'uncertain' and base['Pneumothorax'] is None
    site = tmp_path / 'site.yaml'
    site.write_text('values:\n  negative: [nope]\nobservations:\n  Pneumothorax:\n    mention: [hydropneumo]\n'
                    'post_uncertainty: [is probable]\nreplace: [post_uncertainty]\n', encoding='utf-8')
    calls = read_findings(text, load_vocabulary(str(site)))
    assert calls['Pleural Effusion'] == 'negative' and calls['Pneumothorax'] == 'positive'
    assert calls['Atelectasis'] == 'positive'          # "is possible" was replaced away
    json_site = tmp_path / 'site.json'
    json_site.write_text(json.dumps({'pre_negation': ['sans']}), encoding='utf-8')
    assert read_findings('Sans pneumothorax.', load_vocabulary(str(json_site)))['Pneumothorax'] == 'negative'
    out = _cli('findings', 'Pleural effusion: nope.', '--vocabulary', str(site))
    assert out.returncode == 0 and 'negative' in out.stdout.splitlines()[8], out.stdout


def test_vocabulary_reaches_the_answer_reader():
    answer = 'Stable cardiomegaly; the pleural collection has increased.'
    plain = parse_answer(answer, TEMPORAL_CLASSES, 'Pleural effusion', MS_CXR_T)
    assert (plain.label, plain.rule) == ('worsening', 'unattached')     # "increased" names no finding it knows
    site = vocabulary_from_dict({'observations': {'Pleural Effusion': {'mention': ['pleural collection']}}})
    read = parse_answer(answer, TEMPORAL_CLASSES, 'Pleural effusion', MS_CXR_T, site)
    assert (read.label, read.rule) == ('worsening', 'finding')


@pytest.mark.parametrize('content, message', [
    ('pre_negations: [no]\n', "unknown section(s) ['pre_negations']"),
    ('observations:\n  Effusion:\n    mention: [fluid]\n', "field 'observations.Effusion': not one of"),
    ('observations:\n  Edema:\n    mentions: [fluid]\n', "field 'observations.Edema.mentions': unknown list"),
    ('pre_negation: [free of, no]\n', "field 'pre_negation[1]': found the boolean False"),
    ('values:\n  negative: [1]\n', "field 'values.negative[0]': expected a non-empty phrase"),
    ('values:\n  maybe: [perhaps]\n', "field 'values.maybe': unknown class"),
    ('negation_window: 0\n', "field 'negation_window'"),
    ('statements:\n  - {observation: Edema, call: positive, pattern: "(unclosed"}\n',
     "field 'statements[0].pattern': invalid regular expression"),
    ('statements:\n  - {observation: Edema, call: present, pattern: "x"}\n', "field 'statements[0].call'"),
    ('statements:\n  - {observation: [Edema, Heart], call: positive, pattern: "x"}\n',
     "field 'statements[0].observation': ['Heart']"),
    ('- just a list\n', "field '(top level)': expected a mapping"),
    ('pre_negation: [no\n', 'not valid YAML'),
])
def test_bad_vocabulary_files_name_file_and_field(tmp_path, content, message):
    path = tmp_path / 'bad.yaml'
    path.write_text(content, encoding='utf-8')
    with pytest.raises(VocabularyError) as error:
        load_vocabulary(str(path))
    assert str(path) in str(error.value) and message in str(error.value)
    out = _cli('findings', 'No effusion.', '--vocabulary', str(path))
    assert out.returncode == 2 and str(path) in out.stderr


def test_reader_objects_are_independent():
    site = vocabulary_from_dict({'pre_negation': ['sans']})
    assert FindingsReader(site).read('Sans effusion.')['Pleural Effusion'] == 'negative'
    assert read_findings('Sans effusion.')['Pleural Effusion'] == 'positive'


def _imports(package: str, top_level_only: bool = False):
    """(file name, [imported package or module]) per import statement; relative imports as '.module'."""
    for path in (REPO / package).glob('*.py'):
        tree = ast.parse(path.read_text(encoding='utf-8'))
        for node in (tree.body if top_level_only else ast.walk(tree)):
            if isinstance(node, ast.Import):
                yield path.name, [a.name.split('.')[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                yield path.name, ['.' + node.module if node.level else node.module.split('.')[0]]


def test_dependencies_run_one_way():
    """datafiles (rows in and out) at the bottom, clinical_text on it, data_prep and evaluation siblings on both;
    evaluation reaches data_prep only where it runs data_prep's own work (the drift report with students, the
    teachers' dataset), inside those functions; the command line imports the modules, never the reverse."""
    for package, forbidden in (('datafiles', {'clinical_text', 'data_prep', 'evaluation'}),
                               ('clinical_text', {'data_prep', 'evaluation'}), ('data_prep', {'evaluation'})):
        for name, modules in _imports(package):
            assert not set(modules) & forbidden, f'{package}/{name} imports {set(modules) & forbidden}'
    for name, modules in _imports('evaluation', top_level_only=True):
        assert 'data_prep' not in modules, f'evaluation/{name} imports data_prep at module level'
    lazy = {name for name, modules in _imports('evaluation') if 'data_prep' in modules}
    assert lazy <= {'paper.py', 'cli.py'}, lazy
    for name, modules in _imports('evaluation'):
        assert name in ('cli.py', '__main__.py') or '.cli' not in modules, f'evaluation/{name} imports the CLI'


def test_evaluation_classify_reads_answers_with_the_vocabulary(tmp_path):
    from evaluation.cli import main
    items = REPO / 'sample_data' / 'ms_cxr_t_sample.jsonl'
    answers = tmp_path / 'model.jsonl'
    answers.write_text(json.dumps({'id': 'sample-01', 'answer': 'Sans change in the consolidation.'}) + '\n',
                       encoding='utf-8')
    site = tmp_path / 'site.yaml'
    site.write_text('pre_negation: [sans]\n', encoding='utf-8')
    results = {}
    for name, extra in (('plain', []), ('site', ['--vocabulary', str(site)])):
        assert main(['classify', '--answers', str(answers), '--dataset', str(items), '--out', str(tmp_path / name),
                     '--n-boot', '10', *extra]) == 0
        results[name] = json.loads((tmp_path / name / 'model.json').read_text())
    unparsed = {name: {u['id']: u['rule'] for u in r['unparsed']} for name, r in results.items()}
    assert unparsed['plain']['sample-01'] == 'no label found'
    assert 'sample-01' not in unparsed['site']          # "sans change": stable (read, though not the gold label)
    assert results['site']['source']['vocabulary'] == str(site)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('pre_negation: [yes]\n', encoding='utf-8')
    assert main(['classify', '--answers', str(answers), '--dataset', str(items), '--out', str(tmp_path / 'x'),
                 '--vocabulary', str(bad)]) == 2

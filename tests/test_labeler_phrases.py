"""Every phrase of the CheXpert labeler's phrase files is read as the labeler means it, or docs/readers.md names
the departure.

The lists below are the labeler's `phrases/mention/*.txt` and `phrases/unmention/*.txt` (stanfordmlgroup/
chexpert-labeler, MIT licence), as data: the phrase, then (where the labeler lists a stem or a fragment) a word of
a report that the stem matches. Each phrase is put in a sentence that asserts it ("There is ..." or, for the words
that name the heart or mediastinum, "... is enlarged") and the reader must call its observation positive; an
other-findings phrase must make No Finding negative; an unmention must not be read as its observation.
"""
import re
from pathlib import Path

import pytest

from clinical_text import read_findings

DOCS = (Path(__file__).resolve().parents[1] / 'docs' / 'readers.md').read_text(encoding='utf-8')

# observation -> [(labeler phrase, words of a report that it matches)]
MENTIONS = {
    'Atelectasis': [('atelecta', 'atelectasis'), ('collapse', 'collapse')],
    'Cardiomegaly': [('cardiomegaly', 'cardiomegaly'), ('the heart', 'the heart'), ('heart size', 'heart size'),
                     ('cardiac enlargement', 'cardiac enlargement'), ('cardiac size', 'cardiac size'),
                     ('cardiac shadow', 'cardiac shadow'), ('cardiac contour', 'cardiac contour'),
                     ('cardiac silhouette', 'cardiac silhouette'), ('enlarged heart', 'enlarged heart')],
    'Consolidation': [('consolidat', 'consolidation')],
    'Edema': [('edema', 'edema'), ('heart failure', 'heart failure'), ('chf', 'CHF'),
              ('vascular congestion', 'vascular congestion'), ('pulmonary congestion', 'pulmonary congestion'),
              ('indistinctness', 'indistinctness'), ('vascular prominence', 'vascular prominence')],
    'Enlarged Cardiomediastinum': [('_mediastinum', 'mediastinum'), ('cardiomediastinum', 'cardiomediastinum'),
                                   ('contour', 'mediastinal contour'),
                                   ('mediastinal configuration', 'mediastinal configuration'),
                                   ('mediastinal silhouette', 'mediastinal silhouette'),
                                   ('pericardial silhouette', 'pericardial silhouette'),
                                   ('cardiac silhouette and vascularity', 'cardiac silhouette and vascularity')],
    'Fracture': [('fracture', 'fracture')],
    'Lung Lesion': [('mass', 'mass'), ('nodular density', 'nodular density'),
                    ('nodular densities', 'nodular densities'), ('nodular opacity', 'nodular opacity'),
                    ('nodular opacities', 'nodular opacities'), ('nodular opacification', 'nodular opacification'),
                    ('nodule', 'nodule'), ('lump', 'lump'), ('cavitary lesion', 'cavitary lesion'),
                    ('carcinoma', 'carcinoma'), ('neoplasm', 'neoplasm'), ('tumor', 'tumor')],
    'Lung Opacity': [('opaci', 'opacification'), ('decreased translucency', 'decreased translucency'),
                     ('increased density', 'increased density'), ('airspace disease', 'airspace disease'),
                     ('air-space disease', 'air-space disease'), ('air space disease', 'air space disease'),
                     ('infiltrate', 'infiltrate'), ('infiltration', 'infiltration'),
                     ('interstitial marking', 'interstitial marking'), ('interstitial pattern', 'interstitial pattern'),
                     ('interstitial lung', 'interstitial lung disease'), ('reticular pattern', 'reticular pattern'),
                     ('reticular marking', 'reticular marking'), ('reticulation', 'reticulation'),
                     ('parenchymal scarring', 'parenchymal scarring'),
                     ('peribronchial thickening', 'peribronchial thickening'), ('wall thickening', 'wall thickening'),
                     ('scar', 'scar')],
    'Pleural Effusion': [('pleural fluid', 'pleural fluid'), ('effusion', 'effusion')],
    'Pleural Other': [('pleural thickening', 'pleural thickening'), ('fibrosis', 'fibrosis'),
                      ('fibrothorax', 'fibrothorax'), ('pleural scar', 'pleural scar'),
                      ('pleural parenchymal scar', 'pleural parenchymal scar'),
                      ('pleuro-parenchymal scar', 'pleuro-parenchymal scar'),
                      ('pleuro-pericardial scar', 'pleuro-pericardial scar')],
    'Pneumonia': [('pneumonia', 'pneumonia'), ('infection', 'infection'),
                  ('infectious process', 'infectious process'), ('infectious', 'infectious process')],
    'Pneumothorax': [('pneumothorax', 'pneumothorax'), ('pneumothoraces', 'pneumothoraces')],
    'Support Devices': [('pacer', 'pacer'), ('_line_', 'line'), ('lines', 'lines'), ('picc', 'PICC'),
                        ('tube', 'tube'), ('valve', 'valve'), ('catheter', 'catheter'), ('pacemaker', 'pacemaker'),
                        ('hardware', 'hardware'), ('arthroplast', 'arthroplasty'), ('marker', 'marker'),
                        ('icd', 'ICD'), ('defib', 'defibrillator'), ('device', 'device'), ('drain_', 'drain'),
                        ('plate', 'plate'), ('screw', 'screw'), ('cannula', 'cannula'), ('apparatus', 'apparatus'),
                        ('coil', 'coil'), ('support', 'support'), ('equipment', 'equipment'),
                        ('mediport', 'mediport')],
}
# phrases/mention/no_finding.txt: findings outside the 13 observations (No Finding is negative when one is named)
OTHER_FINDINGS = [
    ('emphysema', 'emphysema'), ('blunt', 'blunting of the costophrenic angle'), ('density', 'density'),
    ('elevation', 'elevation of the right hemidiaphragm'), ('eventration', 'eventration'),
    ('scoliosis', 'scoliosis'), ('degenera', 'degenerative change'), ('calcifi', 'calcification'),
    ('hyperinflation', 'hyperinflation'), ('bronchospasm', 'bronchospasm'), ('asthma', 'asthma'),
    ('hernia', 'hernia'), ('copd', 'COPD'), ('interstitial markings', 'interstitial markings'), ('plaque', 'plaque'),
    ('osteophytosis', 'osteophytosis'), ('aortic disease', 'aortic disease'), ('bronchiolitis', 'bronchiolitis'),
    ('airways disease', 'airways disease'), ('thickening', 'thickening'), ('cephalization', 'cephalization'),
    ('aspiration', 'aspiration'), ('bullae', 'bullae'), ('hyperinflat', 'hyperinflated lungs'),
    ('contusion', 'contusion'), ('atherosclero', 'atherosclerotic change of the aorta'), ('osteopenia', 'osteopenia'),
    ('metastasis', 'metastasis'), ('granuloma', 'granuloma'), ('pneumomediastinum', 'pneumomediastinum'),
    ('pneumoperitoneum', 'pneumoperitoneum'), ('osteodystrophy', 'osteodystrophy'), ('cuffing', 'cuffing'),
    ('irregular lucency', 'irregular lucency'), ('inflam', 'inflammation'), ('fissure', 'fissure'),
    ('hypertension', 'hypertension'), ('prominen', 'prominent interstitium'), ('kyphosis', 'kyphosis'),
    ('defib', 'defibrillator'), ('hyperexpansion', 'hyperexpansion'), ('bullet', 'bullet'),
    ('reticula', 'reticular pattern'), ('thoracentesis', 'thoracentesis'), ('bronchitis', 'bronchitis'),
    ('volume loss', 'volume loss'), ('deformity', 'deformity'), ('hemorrhage', 'hemorrhage'),
    ('hematoma', 'hematoma'), ('radiopaque', 'radiopaque'), ('aerophagia', 'aerophagia'),
    ('arthropathy', 'arthropathy'), ('tracheostomy', 'tracheostomy'),
]
# phrases/unmention/*.txt: (observation, phrase, a sentence holding it that is no mention of the observation)
UNMENTIONS = [
    ('Lung Lesion', 'calcified nodul', 'There is a calcified nodule.'),
    ('Lung Lesion', 'massive', 'There is a massive left effusion.'),
    ('Lung Lesion', 'massengale', 'Findings discussed with Dr. Massengale.'),
    ('Lung Opacity', 'pleural scar', 'There is a pleural scar.'),
    ('Pleural Effusion', 'pericardial effusion', 'There is a pericardial effusion.'),
]
# (observation or 'No Finding', labeler phrase) -> the words of docs/readers.md that name the departure
DEPARTURES = {
    ('Edema', 'vascular congestion'): 'Vascular congestion and its kin',
    ('Edema', 'pulmonary congestion'): 'Vascular congestion and its kin',
    ('Edema', 'indistinctness'): 'Vascular congestion and its kin',
    ('Edema', 'vascular prominence'): 'Vascular congestion and its kin',
    ('Support Devices', '_line_'): 'Bare "line", "lines" and "support" are no device mentions',
    ('Support Devices', 'lines'): 'Bare "line", "lines" and "support" are no device mentions',
    ('Support Devices', 'support'): 'Bare "line", "lines" and "support" are no device mentions',
    ('No Finding', 'fissure'): 'Two of the labeler\'s other-findings stems are narrowed',
    ('No Finding', 'hypertension'): 'Two of the labeler\'s other-findings stems are narrowed',
    ('No Finding', 'defib'): '"defib-" (in its other-findings list) are devices',
    ('No Finding', 'tracheostomy'): '"tracheostomy" and "defib-"',
}
SUBJECTS = {'Cardiomegaly': {'the heart', 'heart size', 'cardiac size', 'cardiac shadow', 'cardiac contour',
                             'cardiac silhouette'},
            'Enlarged Cardiomediastinum': {'_mediastinum', 'cardiomediastinum', 'contour', 'mediastinal configuration',
                                           'mediastinal silhouette', 'pericardial silhouette',
                                           'cardiac silhouette and vascularity'}}


def _sentence(observation: str, phrase: str, words: str) -> str:
    if phrase in SUBJECTS.get(observation, ()):
        return f'{words[0].upper()}{words[1:]} is enlarged.' if words.startswith('the ') else \
            f'The {words} is enlarged.'
    return f'There is {words}.'


MENTION_CASES = [(o, p, w) for o, pairs in MENTIONS.items() for p, w in pairs if (o, p) not in DEPARTURES]


@pytest.mark.parametrize('observation, phrase, words', MENTION_CASES)
def test_labeler_mention_is_read(observation, phrase, words):
    text = _sentence(observation, phrase, words)
    assert read_findings(text)[observation] == 'positive', text


def test_stems_match_every_word_that_starts_with_them():
    for observation, words in (('Atelectasis', ['atelectasis', 'atelectatic', 'atelectases']),
                               ('Consolidation', ['consolidation', 'consolidative', 'consolidated']),
                               ('Lung Opacity', ['opacity', 'opacities', 'opacification', 'opacified'])):
        for word in words:
            assert read_findings(f'Some {word} at the base.')[observation] == 'positive', word


@pytest.mark.parametrize('phrase, words', [(p, w) for p, w in OTHER_FINDINGS if ('No Finding', p) not in DEPARTURES])
def test_labeler_other_finding_rules_out_no_finding(phrase, words):
    text = f'There is {words}.'
    assert read_findings(text)['No Finding'] == 'negative', text


@pytest.mark.parametrize('observation, phrase, text', UNMENTIONS)
def test_labeler_unmention_is_no_mention(observation, phrase, text):
    assert re.search(phrase.replace('_', ' '), text.lower())
    assert read_findings(text)[observation] is None, text


@pytest.mark.parametrize('key, words', sorted(DEPARTURES.items()))
def test_each_departure_is_documented(key, words):
    assert words in DOCS, f'{key}: docs/readers.md does not name this departure ({words!r})'


def test_every_labeler_phrase_is_checked_or_departs():
    """No phrase of the lists above escapes both checks."""
    checked = {(o, p) for o, p, _ in MENTION_CASES} | {('No Finding', p) for p, _ in OTHER_FINDINGS}
    listed = {(o, p) for o, pairs in MENTIONS.items() for p, _ in pairs} | {('No Finding', p) for p, _ in
                                                                            OTHER_FINDINGS}
    assert listed <= checked | set(DEPARTURES)
    assert set(DEPARTURES) <= listed
    assert sum(len(pairs) for pairs in MENTIONS.values()) + len(OTHER_FINDINGS) + len(UNMENTIONS) == 153

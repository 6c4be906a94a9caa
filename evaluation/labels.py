"""Label sets: the observations of a benchmark and the classes an answer about each may take.

A label set is data. The built-in ``ms-cxr-t`` is MS-CXR-T's temporal (progression) benchmark: five
observations, each with the classes improving / stable / worsening. Any other set can be declared in a
small YAML or JSON file (``--labels FILE``) with the same keys as ``MS_CXR_T`` below::

    name: my-set
    observations:                     # observation -> its classes (a list applies to every observation)
      Pleural effusion: [present, absent]
      Edema: [present, absent]
    synonyms:                         # optional: class -> other words that mean it (see parser.py)
      absent: [resolved, cleared]
    observation_synonyms:             # optional: observation -> other words that name it
      Pleural effusion: [effusion]
    negated_observation: absent       # optional: the class meant by "no pleural effusion"
    affirmed_observation: present     # optional: the class meant by a plain "pleural effusion is seen"

An item may also carry its own ``choices`` (a list of classes), which then apply to that item only.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from datafiles import DataError

# Words that mean each temporal class, besides the class name itself. Matching is on whole words,
# case-insensitive, longest phrase first (so "no change" is one phrase, not a negation of "change"). A term
# says something about the finding it modifies (parser.py attaches it), not about the whole answer.
TEMPORAL_SYNONYMS: Dict[str, List[str]] = {
    'improving': ['improved', 'improve', 'improves', 'improvement', 'better', 'decreased', 'decreasing', 'decrease',
                  'decreases', 'reduced', 'reduction', 'resolved', 'resolving', 'resolution', 'regressed',
                  'regressing', 'regression', 'smaller', 'diminished', 'diminishing', 'cleared', 'clearing',
                  'no longer', 'no longer seen', 'no longer visible', 'no longer present', 'less prominent',
                  'less extensive', 'less conspicuous', 'less pronounced', 'less dense', 'less widespread',
                  'lessened', 'receded', 'interval improvement', 'shrunk', 'shrunken', 'shrinking', 'shrank',
                  're-expanded', 're-expansion', 'reexpanded', 'resorbed', 'down from', 'decreased in extent',
                  'decreased in size', 'nearly cleared', 'largely cleared'],
    'stable': ['unchanged', 'stably', 'no change', 'no changes', 'no significant change', 'no interval change',
               'no appreciable change', 'no substantial change', 'no definite change', 'no definite interval change',
               'no significant interval change', 'no meaningful change', 'not changed', 'not significantly changed',
               'not appreciably changed', 'not changed appreciably', 'not significantly different',
               'little change', 'little changed', 'little interval change', 'minimal change', 'without change',
               'without interval change', 'without significant change', 'without significant interval change',
               'remains the same', 'remained the same', 'the same as before', 'essentially the same',
               'looks the same', 'appears the same', 'shows the same', 'same size', 'similar',
               'similar in appearance', 'no progression', 'steady', 'static', 'essentially unchanged', 'as before'],
    'worsening': ['worsened', 'worsen', 'worsens', 'worse', 'progressed', 'progressing', 'progression',
                  'progressive', 'increased', 'increasing', 'increase', 'increases', 'enlarged', 'enlarging',
                  'larger', 'bigger', 'new', 'newly', 'developing', 'developed', 'development', 'deteriorated',
                  'deteriorating', 'deterioration', 'more prominent', 'more extensive', 'more pronounced',
                  'more conspicuous', 'more widespread', 'more confluent', 'more dense', 'denser', 'extended',
                  'extension', 'extending', 'spread', 'spreading', 'expanded', 'grown', 'grows', 'growing',
                  'appeared', 'reaccumulated', 'reaccumulation', 'recurred', 'recurrence', 'up from',
                  'interval worsening', 'not present before', 'not present previously', 'not present on the prior',
                  'not seen previously', 'not seen before', 'not seen on the prior', 'not present on the prior study'],
}

# Words that say "changed" without a direction: negated ("not significantly changed", "no appreciable
# difference", "little change") they mean stable; affirmed they say nothing.
CHANGE_WORDS = ('change', 'changes', 'changed', 'difference', 'differences', 'different', 'differ', 'altered')

# Stable words that only say the finding is still there: they give way to a change term on the same finding
# ("a tiny residual pneumothorax persists, much smaller than before" is improving).
WEAK_TERMS = ('persistent', 'persists', 'persist', 'persisting', 'still present', 'still seen', 'again seen',
              'again noted', 'again demonstrated', 'again visualized', 'again identified', 'redemonstrated',
              're-demonstrated', 'redemonstration', 're-demonstration', 'remains', 'remain', 'residual')

MS_CXR_T_OBSERVATIONS = ('Consolidation', 'Pleural effusion', 'Pneumonia', 'Pneumothorax', 'Edema')
TEMPORAL_CLASSES = ('improving', 'stable', 'worsening')

# Words that may name the observation of several entries: a change term on them speaks for each of these.
SHARED_MENTIONS: Dict[str, Tuple[str, ...]] = {
    **{w: ('Consolidation', 'Pneumonia', 'Edema') for w in ('opacity', 'opacities', 'opacification', 'haziness',
                                                             'airspace disease', 'perihilar opacities')},
    **{w: ('Consolidation', 'Pneumonia') for w in ('infiltrate', 'infiltrates', 'air bronchograms')},
    **{w: MS_CXR_T_OBSERVATIONS for w in ('finding', 'findings', 'abnormality', 'abnormalities')},
}

# Other things a chest radiograph report describes: a change term on them says nothing about the observation
# ("larger lung volumes and clearing of the opacity", "stable cardiomegaly, progressing effusion").
OTHER_FINDINGS = ('heart', 'heart size', 'cardiomegaly', 'cardiac silhouette', 'cardiomediastinal silhouette',
                  'cardiac size', 'mediastinum', 'mediastinal shift', 'mediastinal contours', 'hilar contours',
                  'lung volumes', 'volumes', 'atelectasis', 'emphysema', 'subcutaneous emphysema', 'chest tube',
                  'tube', 'tubes', 'line', 'lines', 'catheter', 'hardware', 'aeration', 'hemidiaphragm',
                  'cavitation', 'nodule', 'nodules', 'mass', 'lymphadenopathy', 'fracture', 'fractures',
                  'support devices', 'pacemaker', 'aorta', 'scarring', 'fibrosis', 'granuloma', 'granulomas',
                  'tension physiology')


@dataclass(frozen=True)
class LabelSet:
    name: str
    observations: Dict[str, Tuple[str, ...]]              # observation (display name) -> its classes
    synonyms: Dict[str, Tuple[str, ...]] = field(default_factory=dict)            # class -> words
    observation_synonyms: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    negated_observation: Optional[str] = None
    affirmed_observation: Optional[str] = None

    def observation(self, name: str) -> Optional[str]:
        """The declared observation that ``name`` spells (case and spacing ignored), or None."""
        key = _key(name)
        for observation in self.observations:
            if _key(observation) == key:
                return observation
        return None

    def classes(self, observation: str) -> Tuple[str, ...]:
        return self.observations[observation]

    def as_dict(self) -> Dict[str, Any]:
        return {'name': self.name, 'observations': {k: list(v) for k, v in self.observations.items()},
                'synonyms': {k: list(v) for k, v in self.synonyms.items()},
                'observation_synonyms': {k: list(v) for k, v in self.observation_synonyms.items()},
                'negated_observation': self.negated_observation, 'affirmed_observation': self.affirmed_observation}


def _key(text: str) -> str:
    return ' '.join(str(text).lower().replace('_', ' ').split())


MS_CXR_T = LabelSet(
    name='ms-cxr-t',
    observations={obs: TEMPORAL_CLASSES for obs in MS_CXR_T_OBSERVATIONS},
    synonyms={k: tuple(v) for k, v in TEMPORAL_SYNONYMS.items()},
)   # its observations' words are the clinical vocabulary's (clinical_text/vocabulary.yaml: mention, signs)

# Presence (zero-shot generalization): the 14 CheXpert observations, each present / absent.
PRESENCE_OBSERVATIONS = ('Atelectasis', 'Cardiomegaly', 'Consolidation', 'Edema', 'Enlarged Cardiomediastinum',
                         'Fracture', 'Lung Lesion', 'Lung Opacity', 'Pleural Effusion', 'Pleural Other', 'Pneumonia',
                         'Pneumothorax', 'Support Devices', 'No Finding')
PRESENCE_CLASSES = ('present', 'absent')
PRESENCE = LabelSet(
    name='presence',
    observations={obs: PRESENCE_CLASSES for obs in PRESENCE_OBSERVATIONS},
    synonyms={'present': ('yes', 'seen', 'visible', 'positive'), 'absent': ('not seen', 'negative')},
    negated_observation='absent', affirmed_observation='present',
)

BUILTIN = {MS_CXR_T.name: MS_CXR_T, PRESENCE.name: PRESENCE}


def label_set_from_dict(data: Any, where: str) -> LabelSet:
    """A label set from the parsed YAML/JSON ``data``; errors name ``where`` and the field."""
    if not isinstance(data, dict):
        raise DataError(f'{where}: a label set must be a mapping with "observations", found {type(data).__name__}')
    unknown = set(data) - {'name', 'observations', 'classes', 'synonyms', 'observation_synonyms',
                           'negated_observation', 'affirmed_observation'}
    if unknown:
        raise DataError(f'{where}: unknown key(s) {sorted(unknown)}')
    observations = data.get('observations')
    shared = data.get('classes')
    if isinstance(observations, list) and shared is not None:
        observations = {obs: shared for obs in observations}
    if not isinstance(observations, dict) or not observations:
        raise DataError(f'{where}: field \'observations\': expected a mapping observation -> list of classes '
                        f'(or a list of observations with "classes")')
    parsed: Dict[str, Tuple[str, ...]] = {}
    for obs, classes in observations.items():
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c.strip()
                                                                          for c in classes):
            raise DataError(f'{where}: field \'observations.{obs}\': expected a list of at least two class names')
        parsed[str(obs)] = tuple(c.strip() for c in classes)
    all_classes = {c for classes in parsed.values() for c in classes}
    synonyms = _string_lists(data.get('synonyms') or {}, where, 'synonyms')
    for cls in synonyms:
        if cls not in all_classes:
            raise DataError(f'{where}: field \'synonyms\': {cls!r} is not a class of this label set')
    obs_synonyms = _string_lists(data.get('observation_synonyms') or {}, where, 'observation_synonyms')
    for name in ('negated_observation', 'affirmed_observation'):
        if data.get(name) is not None and data[name] not in all_classes:
            raise DataError(f'{where}: field {name!r}: {data[name]!r} is not a class of this label set')
    return LabelSet(str(data.get('name') or 'custom'), parsed, synonyms, obs_synonyms,
                    data.get('negated_observation'), data.get('affirmed_observation'))


def _string_lists(value: Any, where: str, name: str) -> Dict[str, Tuple[str, ...]]:
    if not isinstance(value, dict):
        raise DataError(f'{where}: field {name!r}: expected a mapping name -> list of words')
    out = {}
    for key, words in value.items():
        if isinstance(words, str):
            words = [words]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(f'{where}: field \'{name}.{key}\': expected a list of words')
        out[str(key)] = tuple(words)
    return out


def load_label_set(spec: Optional[str]) -> LabelSet:
    """``spec``: a built-in name (``ms-cxr-t``, the default) or a .yaml/.yml/.json file."""
    if not spec:
        return MS_CXR_T
    if spec.lower() in BUILTIN:
        return BUILTIN[spec.lower()]
    if not os.path.isfile(spec):
        raise DataError(f'--labels {spec}: neither a built-in label set ({", ".join(BUILTIN)}) nor a file')
    with open(spec, encoding='utf-8') as f:
        text = f.read()
    try:
        if spec.lower().endswith('.json'):
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:  # json and yaml raise different types; the user needs the file and the reason
        raise DataError(f'{spec}: not valid {"JSON" if spec.lower().endswith(".json") else "YAML"} ({e})') from None
    return label_set_from_dict(data, spec)


def with_choices(label_set: LabelSet, observation: str, choices: Sequence[str]) -> Tuple[str, ...]:
    """The classes that apply to an item: its own ``choices`` when given, else its observation's."""
    return tuple(choices) if choices else label_set.classes(observation)

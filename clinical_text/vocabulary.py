"""The clinical vocabulary as data: ``vocabulary.yaml`` beside this file, extended or overridden by a user file.

Both text readers take their words from here: the findings reader (``findings.py``: CheXpert observations) and
the answer reader (``evaluation/``: change terms on MS-CXR-T findings). docs/readers.md describes the sections.

A user file (``--vocabulary FILE``, YAML or JSON, or ``load_vocabulary(path)``) holds any of the sections of the
built-in file. Its lists are added to the built-in ones; a section named in its ``replace`` list (dotted for a
nested list: ``observations.Edema.uncertain``, ``values.negative``) replaces the built-in one instead.
Errors name the file and the field (``my.yaml: field 'observations.Edema.mention[2]': ...``).
"""
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from datafiles import DataError

OBSERVATIONS = ('Atelectasis', 'Cardiomegaly', 'Consolidation', 'Edema', 'Enlarged Cardiomediastinum', 'Fracture',
                'Lung Lesion', 'Lung Opacity', 'Pleural Effusion', 'Pleural Other', 'Pneumonia', 'Pneumothorax',
                'Support Devices', 'No Finding')
POSITIVE, NEGATIVE, UNCERTAIN = 'positive', 'negative', 'uncertain'
CALLS = (POSITIVE, NEGATIVE, UNCERTAIN)

BUILTIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vocabulary.yaml')
PHRASE_LISTS = ('pre_negation', 'post_negation', 'pre_resolution', 'post_resolution', 'pre_uncertainty',
                'post_uncertainty', 'around_uncertainty', 'pseudo_negation', 'terminators', 'hypothetical', 'generic',
                'other_findings', 'differential_headers', 'skipped_sections', 'sections', 'search', 'refusal',
                'image_reference', 'normal_study')
OBSERVATION_LISTS = ('mention', 'unmention', 'uncertain', 'signs', 'subject', 'uncertain_from')
VALUE_CLASSES = (NEGATIVE, UNCERTAIN, POSITIVE)
SECTIONS = ('negation_window', 'observations', *PHRASE_LISTS, 'values', 'predicates', 'macros', 'statements',
            'replace')


class VocabularyError(DataError):
    """A vocabulary file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Statement:
    pattern: re.Pattern
    observations: Tuple[str, ...]       # "heart and mediastinum are normal" speaks of two
    call: str


@dataclass(frozen=True)
class Vocabulary:
    source: str
    negation_window: int
    observations: Dict[str, Dict[str, Tuple[str, ...]]]     # observation -> mention / unmention / uncertain / signs
    phrases: Dict[str, Tuple[str, ...]]                     # PHRASE_LISTS -> phrases
    values: Dict[str, Tuple[str, ...]]                      # negative / uncertain / positive -> value words
    predicates: Dict[str, Tuple[str, ...]]                  # negative / uncertain / positive -> said of a subject
    statements: Tuple[Statement, ...]

    def terms(self, observation: str, kind: str = 'mention') -> Tuple[str, ...]:
        return self.observations.get(observation, {}).get(kind, ())

    def __getitem__(self, section: str) -> Tuple[str, ...]:
        return self.phrases[section]


def norm(phrase: str) -> str:
    return ' '.join(phrase.lower().split())


def _read(path: str) -> Any:
    if not os.path.isfile(path):
        raise VocabularyError(f'{path}: vocabulary file not found')
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise VocabularyError(f'{path}: cannot read the vocabulary file ({e})') from None
    try:
        if path.lower().endswith('.json'):
            return json.loads(text)
        import yaml
        return yaml.safe_load(text)
    except Exception as e:  # json and yaml raise different types; the user needs the file and the reason
        kind = 'JSON' if path.lower().endswith('.json') else 'YAML'
        raise VocabularyError(f'{path}: not valid {kind} ({e})') from None


def _strings(value: Any, where: str, field: str) -> List[str]:
    if not isinstance(value, list):
        raise VocabularyError(f'{where}: field {field!r}: expected a list of phrases, found {type(value).__name__}')
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool):
            raise VocabularyError(f'{where}: field \'{field}[{i}]\': found the boolean {item} (YAML reads a bare '
                                  f'yes / no / true / false as one: quote it)')
        if not isinstance(item, str) or not item.strip():
            raise VocabularyError(f'{where}: field \'{field}[{i}]\': expected a non-empty phrase, found {item!r}')
        out.append(norm(item))
    return out


def _mapping(value: Any, where: str, field: str) -> Dict:
    if not isinstance(value, dict):
        raise VocabularyError(f'{where}: field {field!r}: expected a mapping, found {type(value).__name__}')
    return value


def _merge_list(base: List[str], extra: List[str], replace: bool) -> List[str]:
    return list(dict.fromkeys(extra if replace else base + extra))


def _merge(base: Dict, data: Any, where: str) -> Dict:
    """``base`` (already checked) with the user's ``data`` added or replacing, checked as it goes."""
    data = _mapping(data, where, '(top level)')
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise VocabularyError(f'{where}: unknown section(s) {unknown}; known: {", ".join(SECTIONS)}')
    replace = set(_strings(data.get('replace', []), where, 'replace'))
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    if 'negation_window' in data:
        window = data['negation_window']
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 20:
            raise VocabularyError(f'{where}: field \'negation_window\': expected a whole number of words, 1 to 20, '
                                  f'found {window!r}')
        out['negation_window'] = window
    for section in PHRASE_LISTS:
        if section in data:
            out[section] = _merge_list(base.get(section, []), _strings(data[section], where, section),
                                       section in replace)
    observations = {name: dict(lists) for name, lists in base.get('observations', {}).items()}
    for name, lists in _mapping(data.get('observations', {}), where, 'observations').items():
        if name not in OBSERVATIONS:
            raise VocabularyError(f'{where}: field \'observations.{name}\': not one of the 14 CheXpert observations '
                                  f'({", ".join(OBSERVATIONS)})')
        lists = _mapping(lists, where, f'observations.{name}')
        for kind, phrases in lists.items():
            field = f'observations.{name}.{kind}'
            if kind not in OBSERVATION_LISTS:
                raise VocabularyError(f'{where}: field {field!r}: unknown list; known: {", ".join(OBSERVATION_LISTS)}')
            current = observations.setdefault(name, {})
            current[kind] = _merge_list(current.get(kind, []), _strings(phrases, where, field), field in replace)
    out['observations'] = observations
    for section in ('values', 'predicates'):
        classes = dict(base.get(section, {}))
        for cls, phrases in _mapping(data.get(section, {}), where, section).items():
            if cls not in VALUE_CLASSES:
                raise VocabularyError(f'{where}: field \'{section}.{cls}\': unknown class; known: '
                                      f'{", ".join(VALUE_CLASSES)}')
            classes[cls] = _merge_list(classes.get(cls, []), _strings(phrases, where, f'{section}.{cls}'),
                                       f'{section}.{cls}' in replace)
        out[section] = classes
    macros = dict(base.get('macros', {}))
    for name, pattern in _mapping(data.get('macros', {}), where, 'macros').items():
        if not isinstance(pattern, str):
            raise VocabularyError(f'{where}: field \'macros.{name}\': expected a regular expression')
        macros[str(name)] = pattern
    out['macros'] = macros
    statements = [] if 'statements' in replace else list(base.get('statements', []))
    given = data.get('statements', [])
    if not isinstance(given, list):
        raise VocabularyError(f'{where}: field \'statements\': expected a list of {{observation, call, pattern}}')
    for i, item in enumerate(given):
        field = f'statements[{i}]'
        item = _mapping(item, where, field)
        if set(item) != {'observation', 'call', 'pattern'}:
            raise VocabularyError(f'{where}: field {field!r}: expected exactly the keys observation, call, pattern; '
                                  f'found {sorted(item)}')
        named = item['observation'] if isinstance(item['observation'], list) else [item['observation']]
        unknown = [o for o in named if o not in OBSERVATIONS]
        if unknown or not named:
            raise VocabularyError(f'{where}: field \'{field}.observation\': {unknown or named!r}: expected one or a '
                                  f'list of the 14 CheXpert observations')
        if item['call'] not in CALLS:
            raise VocabularyError(f'{where}: field \'{field}.call\': expected one of {", ".join(CALLS)}, found '
                                  f'{item["call"]!r}')
        if not isinstance(item['pattern'], str) or not item['pattern'].strip():
            raise VocabularyError(f'{where}: field \'{field}.pattern\': expected a regular expression')
        statements.append(dict(item, where=f'{where}: field \'{field}.pattern\''))
    out['statements'] = statements
    return out


def _compile(data: Dict, source: str) -> Vocabulary:
    macros = data.get('macros', {})
    statements = []
    for item in data['statements']:
        pattern = item['pattern']
        try:
            for _ in range(3):      # macros may use macros
                pattern = re.sub(r'\{(\w+)\}', lambda m: macros.get(m.group(1), m.group(0)), pattern)
            unknown = re.findall(r'(?<!\\)\{([a-z_]+)\}', pattern)
            if unknown:
                raise re.error(f'unknown macro {{{unknown[0]}}}')
            compiled = re.compile(pattern.replace(' ', r'\s+'))
        except re.error as e:
            raise VocabularyError(f'{item["where"]}: invalid regular expression ({e})') from None
        named = item['observation']
        statements.append(Statement(compiled, tuple(named) if isinstance(named, list) else (named,), item['call']))
    observations = {name: {kind: tuple(lists.get(kind, ())) for kind in OBSERVATION_LISTS}
                    for name, lists in data['observations'].items()}
    return Vocabulary(source, data['negation_window'], observations,
                      {section: tuple(data.get(section, ())) for section in PHRASE_LISTS},
                      {cls: tuple(data['values'].get(cls, ())) for cls in VALUE_CLASSES},
                      {cls: tuple(data['predicates'].get(cls, ())) for cls in VALUE_CLASSES}, tuple(statements))


@lru_cache(maxsize=None)
def _builtin_data() -> Dict:
    data = _merge({'negation_window': 6}, _read(BUILTIN), BUILTIN)
    return data


@lru_cache(maxsize=None)
def default_vocabulary() -> Vocabulary:
    return _compile(_builtin_data(), BUILTIN)


def vocabulary_from_dict(data: Any, where: str = '(vocabulary)') -> Vocabulary:
    """The built-in vocabulary with ``data`` (the parsed content of a user file) added or replacing."""
    return _compile(_merge(_builtin_data(), data, where), where)


def load_vocabulary(path: Optional[str] = None) -> Vocabulary:
    """The built-in vocabulary, or the built-in one extended / overridden by the YAML or JSON file ``path``."""
    if path is None:
        return default_vocabulary()
    return vocabulary_from_dict(_read(path), path)

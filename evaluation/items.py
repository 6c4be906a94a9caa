"""Evaluation items and answers: reading and checking them, the ``swift infer`` requests made from them,
and joining answers back to items.

Items file (JSONL, one item a line)::

    {"id": "ms-cxr-t-0001", "images": ["prior.jpg", "current.jpg"], "observation": "Pleural effusion",
     "question": "Compared with the prior image, how has the pleural effusion changed?", "label": "worsening"}

- ``id``: unique text or number (default: the line number); ``images``: a path or a list of paths, relative
  to ``--image-root`` (default: the items file's folder); ``question``: text; ``observation``: one of the
  label set's observations (case ignored); ``label`` (or ``gold``): one of the observation's classes;
  ``choices`` (optional): the item's own list of classes, overriding the label set's.
- Answers (``--answers``): either ``swift infer`` result rows (``response`` + ``messages`` + ``images``; joined
  to items by a fingerprint of the user turn and the image paths, as ms-swift drops the ``id``), or rows
  ``{"id": ..., "answer": "..."}`` (``response`` is accepted for ``answer``), e.g. a teacher's answers.
"""
import os
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from datafiles import DataError, field_error, iter_rows
from datafiles.images import ImagePolicy, image_paths, resolve_image
from datafiles.swift_rows import request_fingerprint

from .labels import LabelSet, with_choices

DEFAULT_PROMPT = '{question}\nAnswer with one of: {choices}.'


@dataclass(frozen=True)
class Item:
    id: str
    where: str
    images: Tuple[str, ...]       # absolute paths
    question: str
    observation: str
    label: str
    classes: Tuple[str, ...]


def _rows(path: str):
    if not os.path.isfile(path):
        raise DataError(f'{path}: no such file')
    for source in iter_rows(path):
        if source.problem:
            raise DataError(f'{source.where}: {source.problem}', 'unreadable row')
        yield source


def _text(row: Dict, where: str, name: str, required: bool = True) -> Optional[str]:
    value = row.get(name)
    if value is None:
        if required:
            raise field_error(where, name, 'missing', 'missing field')
        return None
    if not isinstance(value, str) or not value.strip():
        raise field_error(where, name, f'expected non-empty text, found {type(value).__name__} {value!r}'[:200],
                          'wrong type')
    return value.strip()


def _images(row: Dict, where: str, policy: ImagePolicy) -> Tuple[str, ...]:
    name = 'images' if 'images' in row else 'image'
    return tuple(resolve_image(p, policy, where, name) for p in image_paths(row, where, name))


def _image_policy(path: str, image_root: Optional[str], allow_outside_root: bool) -> ImagePolicy:
    return ImagePolicy(os.path.abspath(image_root or os.path.dirname(os.path.abspath(path))), allow_outside_root)


def read_items(path: str, label_set: LabelSet, image_root: Optional[str] = None,
               check_images: bool = False, allow_outside_root: bool = False) -> List[Item]:
    """Image paths must stay under the image root (symbolic links followed) unless ``allow_outside_root``."""
    policy = _image_policy(path, image_root, allow_outside_root)
    items, seen = [], {}
    for source in _rows(path):
        row, where = source.row, source.where
        item_id = row.get('id', where.rsplit(' ', 1)[-1])
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
            raise field_error(where, 'id', f'expected text or a number, found {type(item_id).__name__}', 'wrong type')
        item_id = str(item_id)
        if item_id in seen:
            raise field_error(where, 'id', f'{item_id!r} already used at {seen[item_id]}', 'duplicate item')
        seen[item_id] = where
        images = _images(row, where, policy)
        if check_images:
            for image in images:
                if not os.path.isfile(image):
                    raise field_error(where, 'images', f'no such file {image}', 'missing image')
        question = _text(row, where, 'question')
        observation_text = _text(row, where, 'observation')
        choices = row.get('choices')
        if choices is not None and (not isinstance(choices, list) or len(choices) < 2 or
                                    not all(isinstance(c, str) and c.strip() for c in choices)):
            raise field_error(where, 'choices', 'expected a list of at least two class names', 'wrong type')
        observation = label_set.observation(observation_text)
        if observation is None:
            if not choices:
                raise field_error(where, 'observation', f'{observation_text!r} is not an observation of label set '
                                  f'{label_set.name!r} ({", ".join(label_set.observations)}); declare it with '
                                  f'--labels FILE or give the item its own "choices"', 'unknown observation')
            observation = observation_text
        classes = with_choices(label_set, observation, [c.strip() for c in choices or []])
        gold_field = 'label' if 'label' in row else 'gold' if 'gold' in row else 'label'
        gold = _text(row, where, gold_field)
        match = [c for c in classes if c.lower() == gold.lower()]
        if not match:
            raise field_error(where, gold_field, f'{gold!r} is not a class of {observation!r} '
                              f'({", ".join(classes)})', 'unknown label')
        items.append(Item(item_id, where, images, question, observation, match[0], classes))
    if not items:
        raise DataError(f'{path}: no items')
    return items


def request_row(item: Item, prompt_template: str = DEFAULT_PROMPT) -> Dict[str, Any]:
    try:
        prompt = prompt_template.format(question=item.question, choices=', '.join(item.classes),
                                        observation=item.observation)
    except (KeyError, IndexError) as e:
        raise DataError(f'--prompt-template: unknown placeholder {e}; use {{question}}, {{choices}}, '
                        f'{{observation}}') from None
    return {'messages': [{'role': 'user', 'content': '<image>' * len(item.images) + prompt}],
            'images': list(item.images)}


def join_answers(ids: List[str], requests: List[Dict], answers_path: str) -> Dict[str, Optional[str]]:
    """item id -> answer text (None where the file has no answer for the item); ``requests[i]`` is item
    ``ids[i]``'s swift infer request."""
    by_id: Dict[str, Optional[str]] = {item_id: None for item_id in ids}
    seen: Dict[str, str] = {}
    pending = defaultdict(deque)      # request fingerprint -> ids, in item order (ms-swift keeps the order)
    for item_id, request in zip(ids, requests):
        pending[request_fingerprint(request)].append(item_id)
    for source in _rows(answers_path):
        row, where = source.row, source.where
        if 'id' in row:
            item_id = str(row['id'])
            if item_id not in by_id:
                raise field_error(where, 'id', f'{item_id!r} is not an item of the dataset', 'unknown item')
            field = 'answer' if 'answer' in row else 'response'
        elif 'response' in row and 'messages' in row:
            queue = pending.get(request_fingerprint(row))
            if not queue:
                raise DataError(f'{where}: this swift infer result matches no (unanswered) item: its question, '
                                f'prompt template or image paths differ from the dataset\'s (give the same '
                                f'--prompt-template and --image-root as the run that made it), or it is a duplicate',
                                'unknown item')
            item_id, field = queue.popleft(), 'response'
        else:
            raise DataError(f'{where}: expected {{"id", "answer"}} or a swift infer result row '
                            f'({{"response", "messages", "images"}}), found keys {sorted(row)}', 'wrong type')
        if item_id in seen:
            raise field_error(where, 'id', f'a second answer for item {item_id!r} (first at {seen[item_id]})',
                              'duplicate answer')
        seen[item_id] = where
        answer = row.get(field)
        if answer is not None and not isinstance(answer, str):
            raise field_error(where, field, f'expected text, found {type(answer).__name__}', 'wrong type')
        by_id[item_id] = answer
    return by_id


@dataclass(frozen=True)
class ReportItem:
    id: str
    where: str
    request: Dict[str, Any]       # what swift infer is given: the turns before the reference, the images
    reference: str
    study_id: Optional[str] = None  # the row's study (data_prep's rows carry it): the key of reference labels


def read_report_items(path: str, image_root: Optional[str] = None,
                      allow_outside_root: bool = False) -> List[ReportItem]:
    """Rows in ms-swift's format (``messages`` ending with the reference as the assistant turn, ``images``),
    e.g. ``data/sft.eval.jsonl``, or ``{"id", "images", "question", "reference"}`` (``report`` for ``reference``).
    The image-root rule applies to the second kind: rows in ms-swift's format are data_prep's output, whose
    image paths data_prep checked against its own image root and wrote absolute."""
    policy = _image_policy(path, image_root, allow_outside_root)
    swift_rows = ImagePolicy(policy.root, allow_outside_root=True)
    items, seen = [], {}
    for source in _rows(path):
        row, where = source.row, source.where
        item_id = str(row.get('id', where.rsplit(' ', 1)[-1]))
        if item_id in seen:
            raise field_error(where, 'id', f'{item_id!r} already used at {seen[item_id]}', 'duplicate item')
        seen[item_id] = where
        images = list(_images(row, where, swift_rows if 'messages' in row else policy)) \
            if ('images' in row or 'image' in row) else []
        if 'messages' in row:
            messages = row['messages']
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise field_error(where, 'messages', 'expected a list of {"role", "content"} turns', 'wrong type')
            last = max((i for i, m in enumerate(messages) if m.get('role') == 'assistant'), default=None)
            if last is None:
                raise field_error(where, 'messages', 'no assistant turn (the reference report)', 'missing field')
            reference = _text(messages[last], f'{where} messages[{last}]', 'content')
            request = {'messages': messages[:last], 'images': images}
        else:
            question = _text(row, where, 'question')
            reference = _text(row, where, 'reference' if 'reference' in row or 'report' not in row else 'report')
            request = {'messages': [{'role': 'user', 'content': '<image>' * len(images) + question}],
                       'images': images}
        study = row.get('study_id')
        items.append(ReportItem(item_id, where, request, reference, None if study in (None, '') else str(study)))
    if not items:
        raise DataError(f'{path}: no items')
    return items

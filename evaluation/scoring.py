"""Answers -> the per-model result (JSON): per-observation top-1 accuracy with counts and a 95% bootstrap
interval, the mean over observations (Table 1's "Avg"), every item's outcome, and the unparsed answers."""
from collections import Counter
from typing import Any, Dict, List, Optional

from .labels import LabelSet
from .items import Item
from .metrics import DEFAULT_N_BOOT, DEFAULT_SEED, accuracy, bootstrap_ci, macro_accuracy, macro_bootstrap_ci
from clinical_text.vocabulary import Vocabulary

from .parser import parse_answer

RESULT_FORMAT = 'swift-apo/classification/v1'
GENERATIVE, LOGLIK = 'generative', 'loglik'
LOGLIK_RULE = 'highest summed log-probability'


def score(items: List[Item], answers: Dict[str, Optional[str]], label_set: LabelSet, model: str,
          n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED, source: Optional[Dict] = None,
          class_scores: Optional[Dict[str, Dict[str, Dict[str, float]]]] = None,
          vocabulary: Optional[Vocabulary] = None) -> Dict[str, Any]:
    """``vocabulary``: the clinical vocabulary the answers are read with (default: the built-in one).
    ``class_scores`` (likelihood scoring: item id -> class -> {"sum_logp", "mean_logp", "n_tokens"}):
    the class with the highest ``sum_logp`` is the prediction, no answer is parsed, and the scores are
    kept with each item."""
    rows = []
    for item in items:
        answer = answers.get(item.id)
        extra = {}
        if class_scores is not None:
            by_class = class_scores[item.id]
            predicted, rule = max(by_class, key=lambda c: by_class[c]['sum_logp']), LOGLIK_RULE
            extra = {'scores': by_class}
        elif answer is None:
            predicted, rule = None, 'no answer'
        else:
            parsed = parse_answer(answer, item.classes, item.observation, label_set, vocabulary)
            predicted, rule = parsed.label, parsed.rule
        rows.append({'id': item.id, 'observation': item.observation, 'gold': item.label, 'predicted': predicted,
                     'correct': predicted == item.label, 'rule': rule, 'answer': answer, **extra})

    order = [obs for obs in label_set.observations if any(r['observation'] == obs for r in rows)]
    order += sorted({r['observation'] for r in rows} - set(order))
    groups = {obs: [r['correct'] for r in rows if r['observation'] == obs] for obs in order}
    cells = {}
    for i, (obs, correct) in enumerate(groups.items()):
        low, high = bootstrap_ci(correct, n_boot, seed + i)
        unparsed = sum(1 for r in rows if r['observation'] == obs and r['predicted'] is None)
        cells[obs] = {'n': len(correct), 'correct': sum(correct), 'accuracy': accuracy(correct),
                      'ci95': [low, high], 'unparsed': unparsed}
    low, high = macro_bootstrap_ci(groups, n_boot, seed)
    all_correct = [r['correct'] for r in rows]
    unparsed = [{k: r[k] for k in ('id', 'observation', 'gold', 'rule', 'answer')}
                for r in rows if r['predicted'] is None]
    return {
        'format': RESULT_FORMAT, 'model': model, 'scoring': LOGLIK if class_scores is not None else GENERATIVE,
        'source': source or {}, 'label_set': label_set.as_dict(),
        'bootstrap': {'n_boot': n_boot, 'seed': seed, 'level': 0.95},
        'observations': cells,
        'average': {'accuracy': macro_accuracy(groups), 'ci95': [low, high], 'n': len(rows),
                    'correct': sum(all_correct), 'micro_accuracy': accuracy(all_correct),
                    'unparsed': len(unparsed), 'parse_rate': 1 - len(unparsed) / len(rows)},
        'rules': dict(sorted(Counter(r['rule'] for r in rows).items())),
        'unparsed': unparsed,
        'items': rows,
    }

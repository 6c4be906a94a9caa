"""Report-generation metrics between generated answers and reference reports.

- BLEU-1..4: ``nltk.translate.bleu_score.corpus_bleu`` with weights (1), (1/2, 1/2), (1/3,)*3, (1/4,)*4, no
  smoothing (as in the report-generation literature); texts lower-cased and split with nltk's
  ``wordpunct_tokenize``.
- ROUGE-L: the ``rouge-score`` package (Google's reimplementation of ROUGE-1.5.5), F-measure, mean over items.
- METEOR: ``nltk.translate.meteor_score`` (mean over items). It needs nltk's WordNet corpus; when it is
  missing (``python -m nltk.downloader wordnet`` installs it) METEOR is reported as unavailable, with that reason.
- CheXbert F1 (``f1chexbert`` package, micro-F1 over the 5 main conditions, and over all 14) and RadGraph F1
  (``radgraph`` package, partial reward): computed when the package and its weights are installed, otherwise
  reported as unavailable with the reason. Nothing here fails for a missing optional metric.
"""
import importlib.util
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

BLEU_WEIGHTS = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3,) * 3, 4: (0.25,) * 4}
CHEXBERT_WEIGHTS = os.path.join(os.path.expanduser('~'), '.cache', 'chexbert', 'chexbert.pth')


def tokenize(text: str) -> List[str]:
    from nltk.tokenize import wordpunct_tokenize
    return wordpunct_tokenize(text.lower())


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    from nltk.translate.bleu_score import corpus_bleu
    hyps = [tokenize(h) for h in hypotheses]
    refs = [[tokenize(r)] for r in references]
    with warnings.catch_warnings():   # nltk warns when a higher-order n-gram never matches (the score is 0 then)
        warnings.simplefilter('ignore')
        return {f'bleu_{n}': float(corpus_bleu(refs, hyps, weights=w)) for n, w in BLEU_WEIGHTS.items()}


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=False)
    scores = [scorer.score(ref, hyp)['rougeL'].fmeasure for hyp, ref in zip(hypotheses, references)]
    return float(sum(scores) / len(scores))


def wordnet_problem() -> str:
    """'' when nltk's WordNet corpus can be loaded, else why not."""
    try:
        from nltk.corpus import wordnet
        wordnet.ensure_loaded()
        wordnet.synsets('effusion')
    except LookupError:
        return 'nltk\'s WordNet corpus is not installed (python -m nltk.downloader wordnet; it cannot be downloaded here)'
    except Exception as e:  # a broken corpus file: say what, don't fail the other metrics
        return f'nltk\'s WordNet corpus could not be loaded ({type(e).__name__}: {e})'
    return ''


def meteor(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    from nltk.translate.meteor_score import meteor_score
    scores = [meteor_score([tokenize(r)], tokenize(h)) for h, r in zip(hypotheses, references)]
    return float(sum(scores) / len(scores))


def chexbert_problem() -> str:
    """'' when CheXbert can run here (the f1chexbert package and its weights), else why not."""
    if importlib.util.find_spec('f1chexbert') is None:
        return ('package f1chexbert is not installed (pip install f1chexbert; it also needs the CheXbert '
                f'weights at {CHEXBERT_WEIGHTS}, which it downloads on first use and cannot be fetched here)')
    if not os.path.isfile(CHEXBERT_WEIGHTS):
        return f'f1chexbert is installed but its weights {CHEXBERT_WEIGHTS} are missing (cannot be downloaded here)'
    return ''


def chexbert_f1(hypotheses: Sequence[str], references: Sequence[str]) -> Tuple[Dict[str, float], str]:
    problem = chexbert_problem()
    if problem:
        return {}, problem
    try:
        from f1chexbert import F1CheXbert
        _, _, report, report_5 = F1CheXbert()(hyps=list(hypotheses), refs=list(references))
        return {'chexbert_f1_micro_5': float(report_5['micro avg']['f1-score']),
                'chexbert_f1_micro_14': float(report['micro avg']['f1-score'])}, ''
    except Exception as e:  # third-party model loading: report, don't fail
        return {}, f'f1chexbert failed: {type(e).__name__}: {e}'


def chexbert_labels(texts: Sequence[str]) -> Tuple[Optional[List[Dict[str, Optional[str]]]], str]:
    """CheXbert's labels of ``texts`` as the reader's calls (present = 'positive', absent = 'negative', blank =
    None: f1chexbert's "rrg" mode counts uncertain as present), or None and why it is unavailable."""
    problem = chexbert_problem()
    if problem:
        return None, problem
    try:
        from f1chexbert import F1CheXbert
        labeller = F1CheXbert()
        calls = []
        for text in texts:
            row = labeller.get_label(text or '', mode='rrg')
            calls.append({obs: None if value == '' else 'positive' if value else 'negative'
                          for obs, value in zip(labeller.target_names, row)})
        return calls, ''
    except Exception as e:  # third-party model loading: report, don't fail
        return None, f'f1chexbert failed: {type(e).__name__}: {e}'


def radgraph_f1(hypotheses: Sequence[str], references: Sequence[str]) -> Tuple[Dict[str, float], str]:
    if importlib.util.find_spec('radgraph') is None:
        return {}, ('package radgraph is not installed (pip install radgraph; it also needs the RadGraph model '
                    'weights, downloaded on first use, which cannot be fetched here)')
    previous = os.environ.get('HF_HUB_OFFLINE')
    os.environ['HF_HUB_OFFLINE'] = '1'    # never try the network: fail fast when the weights are not cached
    try:
        from radgraph import F1RadGraph
        reward = F1RadGraph(reward_level='partial')(hyps=list(hypotheses), refs=list(references))[0]
        return {'radgraph_f1_partial': float(reward)}, ''
    except Exception as e:  # third-party model loading: report, don't fail
        return {}, f'radgraph failed (weights not cached?): {type(e).__name__}: {e}'
    finally:
        if previous is None:
            os.environ.pop('HF_HUB_OFFLINE', None)
        else:
            os.environ['HF_HUB_OFFLINE'] = previous


def text_metrics(hypotheses: Sequence[str], references: Sequence[str], clinical: bool = True) -> Dict[str, Any]:
    """``{"metrics": {name: value}, "unavailable": {name: reason}}``; ``hypotheses[i]`` answers ``references[i]``."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f'need the same, non-zero number of answers and references: '
                         f'{len(hypotheses)} vs {len(references)}')
    hypotheses = [h or '' for h in hypotheses]
    metrics: Dict[str, float] = {**bleu(hypotheses, references), 'rouge_l': rouge_l(hypotheses, references)}
    unavailable: Dict[str, str] = {}
    problem = wordnet_problem()
    if problem:
        unavailable['meteor'] = problem
    else:
        metrics['meteor'] = meteor(hypotheses, references)
    if clinical:
        for name, fn in (('chexbert_f1', chexbert_f1), ('radgraph_f1', radgraph_f1)):
            values, problem = fn(hypotheses, references)
            metrics.update(values)
            if problem:
                unavailable[name] = problem
    return {'metrics': metrics, 'unavailable': unavailable, 'n': len(hypotheses)}

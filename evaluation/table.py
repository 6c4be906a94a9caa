"""Result JSONs -> Table 1's layout (a row per model, a column per observation, then "Avg") as Markdown,
and a grouped bar chart (PNG) with the 95% bootstrap intervals as error bars.

A model scored both ways (``classify`` and ``classify --scoring loglik``) gets two adjacent rows, "(generative)"
and "(likelihood)"; a likelihood result alone is still marked "(likelihood)".

A cell reads ``0.84 [0.72, 0.94] (42/50)``: accuracy, 95% bootstrap interval, correct/items. With
``published=True`` the paper's rows (``published.py``) are added below, named "... (published)", with the
published value only; they are the paper's figures on the full MS-CXR-T, not computed here.
"""
import json
import re
from typing import Any, Dict, List, Optional, Sequence

from datafiles import DataError

from .published import OBSERVATIONS as PUBLISHED_OBSERVATIONS, PUBLISHED, SOURCE as PUBLISHED_SOURCE
from .scoring import LOGLIK, RESULT_FORMAT


def file_name(name: str) -> str:
    """A model's name as the stem of its result files."""
    return re.sub(r'[^\w.+-]+', '_', name).strip('._') or 'model'

AVG = 'Avg'


def read_result_file(path: str, result_format: str, kind: str, command: str, note: str = '') -> Dict[str, Any]:
    """A result JSON written by ``python -m evaluation COMMAND``, its path kept as ``_path``; a clear error for a
    missing, unreadable or other kind of file."""
    try:
        with open(path, encoding='utf-8') as f:
            result = json.load(f)
    except FileNotFoundError:
        raise DataError(f'{path}: no such file') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f'{path}: not a JSON result file ({e})') from None
    if not isinstance(result, dict) or result.get('format') != result_format:
        raise DataError(f'{path}: not a {kind} result (expected "format": "{result_format}", as written by '
                        f'`python -m evaluation {command}`){note}')
    result['_path'] = path
    return result


def load_result(path: str) -> Dict[str, Any]:
    return read_result_file(path, RESULT_FORMAT, 'classification', 'classify')


def _columns(results: Sequence[Dict]) -> List[str]:
    columns: List[str] = []
    for result in results:
        for obs in result['observations']:
            if obs not in columns:
                columns.append(obs)
    return columns


def _is_loglik(result: Dict) -> bool:
    return result.get('scoring') == LOGLIK


def _ordered(results: Sequence[Dict]) -> List[Dict]:
    """Each likelihood result moved right after the generative result of the same model, when there is one."""
    generative = {r['model'] for r in results if not _is_loglik(r)}
    ordered = [r for r in results if not (_is_loglik(r) and r['model'] in generative)]
    for twin in [r for r in results if _is_loglik(r) and r['model'] in generative]:
        at = next(i for i, r in enumerate(ordered) if r['model'] == twin['model'] and not _is_loglik(r))
        ordered.insert(at + 1, twin)
    return ordered


def _label(result: Dict, results: Sequence[Dict]) -> str:
    if _is_loglik(result):
        return f'{result["model"]} (likelihood)'
    if any(_is_loglik(r) and r['model'] == result['model'] for r in results):
        return f'{result["model"]} (generative)'
    return result['model']


def _cell(cell: Optional[Dict]) -> str:
    if cell is None:
        return '–'
    low, high = cell['ci95']
    return f'{cell["accuracy"]:.2f} [{low:.2f}, {high:.2f}] ({cell["correct"]}/{cell["n"]})'


def _published_applies(columns: Sequence[str]) -> bool:
    return set(columns) <= set(PUBLISHED_OBSERVATIONS)


def markdown(results: Sequence[Dict], published: bool = False, baseline: int = 0) -> str:
    """``results[:baseline]`` are marked as baselines, and every row gets its Avg difference to the first."""
    baselines = [id(r) for r in results[:baseline]]
    base = results[0]['average']['accuracy'] if baseline else None
    results = _ordered(results)
    columns = _columns(results)
    header = ['model', *columns, AVG] + (['Δ Avg vs baseline'] if baseline else [])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for result in results:
        name = _label(result, results) + (' (baseline)' if id(result) in baselines else '')
        row = [name, *(_cell(result['observations'].get(obs)) for obs in columns), _cell(result['average'])]
        if baseline:
            row.append('–' if id(result) == baselines[0] else f'{result["average"]["accuracy"] - base:+.2f}')
        lines.append('| ' + ' | '.join(row) + ' |')
    notes = ['', 'Cells: top-1 accuracy [95% bootstrap interval] (correct/items). Avg: mean over the observations '
             '(its interval from a bootstrap within each observation). Unparseable answers count as wrong.']
    for result in results:
        avg = result['average']
        if _is_loglik(result):
            how = (f'likelihood scoring (answer texts {result["source"].get("answer_template", "?")!r}, the highest '
                   f'summed log-probability wins), nothing parsed')
        else:
            how = f'{avg["unparsed"]} unparsed (parse rate {avg["parse_rate"]:.0%})'
        notes.append(f'- {_label(result, results)}: {avg["n"]} items, {how}; from `{result.get("_path", "?")}`')
    if published:
        if _published_applies(columns):
            for name, values in PUBLISHED.items():
                row = [f'{name} (published)', *(f'{values[obs]:.2f}' for obs in columns), f'{values[AVG]:.2f}']
                if baseline:
                    row.append('–')
                lines.append('| ' + ' | '.join(row) + ' |')
            notes.append(f'- Rows marked (published): {PUBLISHED_SOURCE}: the paper\'s figures on the full '
                         f'benchmark, not computed here, no interval known. Their Avg is over all five observations.')
        else:
            notes.append(f'- Published rows left out: they cover {", ".join(PUBLISHED_OBSERVATIONS)}, '
                         f'these results cover {", ".join(columns)}.')
    return '\n'.join(lines + notes) + '\n'


def bar_chart(results: Sequence[Dict], path: str, published: bool = False, title: str = 'Top-1 accuracy') -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    results = _ordered(results)
    columns = _columns(results)
    groups = [*columns, AVG]
    series = []
    for result in results:
        cells = [result['observations'].get(obs) for obs in columns] + [result['average']]
        values = [c['accuracy'] if c else np.nan for c in cells]
        errors = [[c['accuracy'] - c['ci95'][0] if c else 0 for c in cells],
                  [c['ci95'][1] - c['accuracy'] if c else 0 for c in cells]]
        series.append((_label(result, results), values, errors, None))
    if published and _published_applies(columns):
        for name, values in PUBLISHED.items():
            series.append((f'{name} (published)', [values[g] for g in groups], None, '//'))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(groups) + 0.3 * len(series)), 4.5))
    for i, (name, values, errors, hatch) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, yerr=errors, capsize=2,
               hatch=hatch, edgecolor='black' if hatch else None, linewidth=0.4, alpha=0.6 if hatch else 1.0)
    ax.set_xticks(x, [g.replace(' ', '\n') for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel('top-1 accuracy')
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, format='png', dpi=120)
    plt.close(fig)


def compare_markdown(a: Dict, b: Dict, comparison: Dict) -> str:
    name_a, name_b = _label(a, [a, b]), _label(b, [a, b])  # one model scored both ways: its two scorings
    lines = [f'# {name_b} vs {name_a} (paired, {comparison["n_items"]} items)', '',
             '| observation | n | A | B | B − A | only A right | only B right | McNemar exact p |',
             '|---|---|---|---|---|---|---|---|']
    for obs, row in comparison['observations'].items():
        lines.append(f'| {obs} | {row["n"]} | {row["a"]:.2f} | {row["b"]:.2f} | {row["b"] - row["a"]:+.2f} | '
                     f'{row["mcnemar"]["a_only"]} | {row["mcnemar"]["b_only"]} | {row["mcnemar"]["p_value"]:.3g} |')
    pooled, boot = comparison['pooled'], comparison['paired_bootstrap']
    lines.append(f'| all items | {comparison["n_items"]} | {pooled["a"]:.2f} | {pooled["b"]:.2f} | '
                 f'{pooled["b"] - pooled["a"]:+.2f} | {pooled["mcnemar"]["a_only"]} | {pooled["mcnemar"]["b_only"]} | '
                 f'{pooled["mcnemar"]["p_value"]:.3g} |')
    lines += ['', f'Avg (mean over observations): B − A = {boot["difference"]:+.3f}, 95% paired bootstrap interval '
              f'[{boot["ci_low"]:+.3f}, {boot["ci_high"]:+.3f}], bootstrap p = {boot["p_value"]:.3g} '
              f'({boot["n_boot"]} resamples, seed {boot["seed"]}). A = {name_a}, B = {name_b}.']
    return '\n'.join(lines) + '\n'

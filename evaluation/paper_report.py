"""The one Markdown page of ``evaluation paper`` (``paper.md``), with its PNG charts, made from the result files the
steps wrote. Nothing here scores anything: every figure is read from a result file the page links to."""
import datetime
import json
import os
import re
from typing import Dict, List, Optional, Sequence

from datafiles import output_set

from .clinical_efficacy import POLICIES

FAMILY_TITLES = {
    'table1': '1. Disease classification (Table 1, MS-CXR-T)',
    'report_generation': '2. Report generation',
    'consistency': '3. Chain-of-thought consistency',
    'students': '4. Students beside their teachers',
    'generalization': '5. Zero-shot generalization',
}


def _read(path: str) -> Dict:
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def _num(value: Optional[float], digits: int = 3) -> str:
    return '–' if value is None else f'{value:.{digits}f}'


def _embedded(path: str, out: str) -> List[str]:
    """A Markdown file written by a step, its image links made relative to the report's folder."""
    folder = os.path.relpath(os.path.dirname(path), out)
    with open(path, encoding='utf-8') as handle:
        text = handle.read().rstrip('\n')
    return re.sub(r'\]\(([^)/]+\.png)\)', lambda m: f']({folder}/{m.group(1)})', text).split('\n')


def _outputs(steps, family: str, suffix: str) -> List[str]:
    return [s.output for s in steps if s.family == family and s.output and s.output.endswith(suffix)]


def _out_flag(step) -> str:
    return step.argv[step.argv.index('--out') + 1]


def _comparisons(steps, family: str) -> List[tuple]:
    """(comparison JSON, its Markdown file's name) of each ``compare`` step of the family."""
    return [(_read(os.path.splitext(_out_flag(s))[0] + '.json'), os.path.basename(_out_flag(s)))
            for s in steps if s.family == family and s.argv[0] == 'compare']


def _bars(path: str, outputs, groups: Sequence[str], series: Sequence, ylabel: str, title: str) -> None:
    """Grouped bars: ``series`` = [(name, values, (low errors, high errors) or None)]; None values are left out."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 0.3 * len(series)), 4.0))
    for i, (name, values, errors) in enumerate(series):
        values = [np.nan if v is None else v for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, yerr=errors, capsize=2)
    ax.set_xticks(x, [g.replace(' ', '\n') for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(outputs.temp_path(path), format='png', dpi=120)
    plt.close(fig)


def _table1(steps, out: str, baseline: str) -> List[str]:
    lines = []
    table = [s for s in steps if s.family == 'table1' and s.argv[0] == 'table']
    if table:
        lines += _embedded(_out_flag(table[0]), out)
    comparisons = [c for c, _ in _comparisons(steps, 'table1')]
    if comparisons:
        lines += ['', f'Paired tests against {baseline} on the same items (`evaluation compare`):', '',
                  '| model | Avg | Avg − baseline [95% paired bootstrap CI] | bootstrap p | McNemar p (all items) |',
                  '|---|---|---|---|---|']
        for c in comparisons:
            boot, pooled = c['paired_bootstrap'], c['pooled']
            lines.append(f'| {c["b"]} | {pooled["b"]:.3f} | {boot["difference"]:+.3f} [{boot["ci_low"]:+.3f}, '
                         f'{boot["ci_high"]:+.3f}] | {boot["p_value"]:.3g} | {pooled["mcnemar"]["p_value"]:.3g} |')
    return lines


def _report_generation(steps, out: str, outputs, baseline: str) -> List[str]:
    results = [_read(p) for p in _outputs(steps, 'report_generation', '.gen.json')]
    if not results:
        return ['No model was scored.']
    words = ['bleu_1', 'bleu_4', 'rouge_l', 'meteor']
    stats = [('14', 'micro_f1'), ('14', 'macro_f1'), ('5', 'micro_f1'), ('5', 'macro_f1')]
    labeller = results[0]['clinical_efficacy']['labeller']
    lines = [f'Word overlap, and clinical efficacy (CE) F1 over the 14 CheXpert observations and the common 5, '
             f'{labeller}; uncertain counted as positive here (as negative: in each `.gen.json` / `.gen.md`).', '',
             '| model | reports | BLEU-1 | BLEU-4 | ROUGE-L | METEOR | CE micro-F1 (14) | CE macro-F1 (14) | '
             'CE micro-F1 (5) | CE macro-F1 (5) |', '|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        ce = r['clinical_efficacy'][POLICIES[0]]
        cells = [_num(r['metrics'].get(w)) if w in r['metrics'] else 'n/a' for w in words]
        cells += [f'{_num(ce[s][k]["value"])} [{_num(ce[s][k]["ci"][0], 2)}, {_num(ce[s][k]["ci"][1], 2)}]'
                  for s, k in stats]
        lines.append(f'| {r["model"]} | {r["n"]} | ' + ' | '.join(cells) + ' |')
    unavailable = sorted({k for r in results for k in r.get('unavailable', {})})
    if unavailable:
        lines += ['', f'n/a: {", ".join(unavailable)} (unavailable here; the reason is in each `.gen.json`).']
    for key, whom in (('reference_agreement', 'the given reference labels'), ('chexbert_agreement', 'CheXbert')):
        if key in results[0]:   # the labeller's error, to read next to the F1 (per observation: each `.gen.md`)
            macro = results[0][key]['macro']
            lines += ['', f'The reader against {whom} on the reference reports: present-vs-not agreement '
                      f'{_num(macro["present_agreement"])}, kappa {_num(macro["kappa"])} (means over the '
                      f'observations present in them).']
    chart = os.path.join(out, 'report_generation.png')
    groups = [f'{k.replace("_f1", "")} F1 ({s})' for s, k in stats]
    series = []
    for r in results:
        ce = r['clinical_efficacy'][POLICIES[0]]
        values = [ce[s][k]['value'] for s, k in stats]
        series.append((r['model'], values, [[v - ce[s][k]['ci'][0] for v, (s, k) in zip(values, stats)],
                                             [ce[s][k]['ci'][1] - v for v, (s, k) in zip(values, stats)]]))
    _bars(chart, outputs, groups, series, 'F1', 'Clinical efficacy (project reader, uncertain as positive)')
    lines += ['', '![Clinical efficacy](report_generation.png)']
    for c, md in _comparisons(steps, 'report_generation'):
        e = c[POLICIES[0]]['14']['micro_f1']
        lines.append(f'- {c["b"]} vs {baseline}: CE micro-F1 (14) {e["difference"]:+.3f} [{e["ci_low"]:+.3f}, '
                     f'{e["ci_high"]:+.3f}], paired bootstrap p = {e["p_value"]:.3g} (every statistic, both '
                     f'policies: `report_generation/{md}`)')
    return lines


def _consistency(steps, out: str, outputs) -> List[str]:
    lines, series_names, rates = [], [], []
    models = [_read(p) for p in _outputs(steps, 'consistency', '.consistency.json')
              if not p.endswith('.teachers.consistency.json')]
    if models:
        lines += ['Models, N sampled answers per item (definitions: docs/evaluation.md, *Chain-of-thought '
                  'consistency*):', '', '| model | items | samples | majority agreement | mean Fleiss κ over '
                  'observations | reasoning-answer consistency (checked) | inconsistent |',
                  '|---|---|---|---|---|---|---|']
        for r in models:
            kappas = [o['fleiss_kappa'] for o in r['observations'].values() if o['fleiss_kappa'] is not None]
            ra = r['reasoning_answer']
            lines.append(f'| {r["name"]} | {r["items_with_samples"]} | {r["samples"]} | '
                         f'{_num(r["majority_agreement"])} | '
                         f'{_num(sum(kappas) / len(kappas)) if kappas else "–"} | {_num(ra["consistency_rate"])} '
                         f'({ra["checked"]}) | {ra["inconsistent"]} |')
            series_names.append(r['name'])
            rates.append(ra['consistency_rate'])
    for path in _outputs(steps, 'consistency', '.teachers.consistency.json'):
        r = _read(path)
        lines += ['', f'Teachers ({r["source"]["teachers"]}): one trace per teacher and study; reasoning vs the '
                  'final answer of the same trace, and agreement between teachers.', '',
                  '| teacher | traces | reasoning-answer consistency (checked) | inconsistent |', '|---|---|---|---|']
        for teacher, t in r['teachers'].items():
            lines.append(f'| {teacher} | {t["traces"]} | {_num(t["consistency_rate"])} ({t["checked"]}) | '
                         f'{t["inconsistent"]} |')
            series_names.append(teacher)
            rates.append(t['consistency_rate'])
        between = [(o, v) for o, v in r['between_teachers'].items() if v['studies']]
        kappas = [v['fleiss_kappa'] for _, v in between if v['fleiss_kappa'] is not None]
        if between:
            agreement = sum(v['majority_agreement'] for _, v in between) / len(between)
            lines += ['', f'Between teachers: majority agreement {_num(agreement)} '
                      f'and Fleiss κ {_num(sum(kappas) / len(kappas)) if kappas else "–"} (means over the '
                      f'{len(between)} observations; per observation in `{os.path.relpath(path, out)}`).']
    if any(rate is not None for rate in rates):
        _bars(os.path.join(out, 'consistency.png'), outputs, series_names,
              [('reasoning-answer consistency', rates, None)],
              'rate', 'Reasoning-answer consistency (models and teachers)')
        lines += ['', '![Reasoning-answer consistency](consistency.png)']
    return lines or ['Nothing was scored.']


def _students(steps, out: str, outputs) -> List[str]:
    paths = _outputs(steps, 'students', 'drift.json')
    if not paths:
        return ['Not run.']
    drift = _read(paths[0])
    students = drift.get('students') or {}
    accuracy = drift['label_accuracy']

    def macro(source: str) -> Optional[float]:
        values = [v['accuracy'] for v in accuracy.get(source, {}).values() if v and v.get('accuracy') is not None]
        return sum(values) / len(values) if values else None
    teachers = sorted(set(accuracy) - set(students) - {'consensus'})
    lines = [f'Label accuracy of each source\'s findings against the study labels ({drift["labels"]["source"]}), '
             f'read by the findings reader; {drift["studies"]} studies. Teachers are scored on every labelled study, '
             f'students on the studies they answered; the paired tests below use only studies both answered. Full '
             f'tables: `{os.path.relpath(paths[0], out)}`'.replace('.json', '.md'), '',
             '| source | kind | macro accuracy |', '|---|---|---|']
    lines += [f'| {t} | teacher | {_num(macro(t))} |' for t in teachers]
    lines += [f'| {s} | student | {_num(macro(s))} |' for s in students]
    for name, s in students.items():
        if not s['studies_answered']:
            lines += ['', f'**{name}**: none of its answers joined a study of the dataset (their ids, or their '
                      'requests, are not this dataset\'s studies).']
            continue
        beats = s['beats_best_teacher']
        lines += ['', f'**{name}** ({s["studies_answered"]} studies answered) against the best teacher of each '
                  f'observation (McNemar, exact, paired studies): better on {beats["better"]} of '
                  f'{beats["observations"]} observations, {beats["better_p_below_0.05"]} of them with p < 0.05.', '',
                  '| observation | best teacher | teacher acc. | student acc. | paired | only student right | '
                  'only teacher right | p |', '|---|---|---|---|---|---|---|---|']
        for obs, v in s['versus_best_teacher'].items():
            if v:
                lines.append(f'| {obs} | {v["best_teacher"]} | {_num(v["teacher_accuracy_paired"])} | '
                             f'{_num(v["student_accuracy_paired"])} | {v["paired_studies"]} | '
                             f'{v["student_only_right"]} | {v["teacher_only_right"]} | {v["p_value"]:.3g} |')
    if not students:
        lines += ['', 'No student answers were joined (see *Not run* below).']
    names = teachers + list(students)
    _bars(os.path.join(out, 'students.png'), outputs, names, [('macro accuracy', [macro(n) for n in names], None)],
          'accuracy', 'Label accuracy: teachers and students')
    return lines + ['', '![Teachers and students](students.png)']


def _generalization(steps, out: str) -> List[str]:
    lines = []
    for step in (s for s in steps if s.family == 'generalization' and s.argv[0] == 'table'):
        set_name = step.title.split(': ')[0].replace('generalization ', '', 1)
        lines += [f'**{set_name}** (label set present / absent):', '']
        lines += _embedded(_out_flag(step), out) + ['']
    return lines or ['No model was scored.']


def write_report(config, out: str, steps, skipped: Sequence[str]) -> str:
    path = os.path.join(out, 'paper.md')
    with output_set() as outputs:
        sections = {'table1': lambda: _table1(steps, out, config.baseline),
                    'report_generation': lambda: _report_generation(steps, out, outputs, config.baseline),
                    'consistency': lambda: _consistency(steps, out, outputs),
                    'students': lambda: _students(steps, out, outputs),
                    'generalization': lambda: _generalization(steps, out)}
        lines = [f'# The paper\'s experiments: {", ".join(m.name for m in config.models)}', '',
                 f'Made by `python -m evaluation paper --config {config.path} --out {out}` on '
                 f'{datetime.date.today().isoformat()}. Every figure is read from the result file named beside it; '
                 'the commands that made them are listed at the end.']
        for family, title in FAMILY_TITLES.items():
            if family in config.sections:
                lines += ['', f'## {title}', ''] + sections[family]()
        if skipped:
            lines += ['', '## Not run', ''] + [f'- {s}' for s in skipped]
        lines += ['', '## Commands', '', '```bash'] + [s.command for s in steps] + ['```']
        with outputs.open(path) as handle:
            handle.write('\n'.join(lines) + '\n')
    return path

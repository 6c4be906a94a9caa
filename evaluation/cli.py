"""``python -m evaluation {classify,items,table,compare,report-gen,consistency,paper}``: the thin command line over the modules.

    python -m evaluation classify --model output/sft-merged --dataset ms_cxr_t.jsonl --out reports/eval/
    python -m evaluation classify --model output/sft-merged --scoring loglik --dataset ms_cxr_t.jsonl --out reports/
    python -m evaluation classify --answers gpt5_answers.jsonl --name GPT-5 --dataset ms_cxr_t.jsonl --out reports/eval/
    python -m evaluation table reports/eval/*.json --published --out reports/eval/table1.md
    python -m evaluation compare reports/eval/sft.json reports/eval/apo.json --out reports/eval/sft_vs_apo.md
    python -m evaluation items --ms-cxr-t MS_CXR_T_temporal_image_classification_v1.0.0.csv --image-root mimic-cxr-jpg/ --out items.jsonl
    python -m evaluation items --labels-csv CheXpert-v1.0-small/valid.csv --image-root . --out chexpert.items.jsonl
    python -m evaluation report-gen --model output/sft-merged --dataset data/sft.eval.jsonl --out reports/gen/
    python -m evaluation consistency --model output/sft-merged --samples 5 --temperature 0.7 --seed 0 --dataset items.jsonl --out reports/cot/
    python -m evaluation paper --config paper.yaml --out reports/paper/
"""
import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from clinical_text.labels import as_calls, load_reference_labels, study_key
from clinical_text.vocabulary import load_vocabulary
from datafiles import DataError, dump_row, iter_rows, output_set, run_command

from .clinical_efficacy import agreement_markdown_lines, compare_markdown_lines, markdown_lines
from .compare import GEN_FORMAT, compare, compare_gen, gen_efficacy, load_gen_result
from .items import DEFAULT_PROMPT, join_answers, read_items, read_report_items, request_row
from .datasets import UNCERTAIN_POLICIES, build_items, csv_kind
from .labels import PRESENCE, load_label_set
from .metrics import DEFAULT_N_BOOT, DEFAULT_SEED
from .report_gen import chexbert_labels, text_metrics
from .paper import run_paper
from .loglik import DEFAULT_ANSWER_TEMPLATE, answer_texts, load_model_template, loglik_scores
from .scoring import GENERATIVE, LOGLIK, score
from .swift_infer import run_swift_infer
from .table import bar_chart, compare_markdown, file_name, load_result, markdown


def _source_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--model', help='model or checkpoint folder: answers are generated with `swift infer`')
    source.add_argument('--answers', help='JSONL of answers already generated: swift infer result rows, or '
                        '{"id": ..., "answer": ...} rows (e.g. a teacher\'s answers); no model is run')
    parser.add_argument('--dataset', required=True, help='items JSONL (see docs/evaluation.md); for classify also an '
                        'MS-CXR-T CSV or a CheXpert-style labels CSV (*.csv), made into items on the fly')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--name', help='model name in tables and output file names (default: from --model / --answers)')
    parser.add_argument('--image-root', help='folder the image paths are relative to (default: the dataset\'s folder)')
    parser.add_argument('--allow-outside-image-root', action='store_true',
                        help='accept absolute image paths and paths (or symbolic links) that leave the image root')
    infer = parser.add_argument_group('swift infer (with --model)')
    infer.add_argument('--infer-backend', choices=['auto', 'transformers', 'vllm'], default='auto',
                       help='auto: vllm when it is installed and a GPU is visible, else transformers (PyTorch)')
    infer.add_argument('--adapters', nargs='+', default=[], metavar='CHECKPOINT',
                       help='LoRA checkpoint(s) applied to --model (as `swift infer --adapters`)')
    infer.add_argument('--max-new-tokens', type=int, default=512)
    infer.add_argument('--swift-args', default='', help='more `swift infer` arguments, one string, e.g. '
                       '"--model_type qwen2_5_vl --template qwen2_5_vl --max_batch_size 8" (default: greedy decoding)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m evaluation',
                                     description='Table 1 (MS-CXR-T-style classification) for any set of models, '
                                     'paired tests, and report-generation metrics.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    classify = commands.add_parser('classify', help='score a model (or a file of answers) on classification items')
    _source_args(classify)
    classify.add_argument('--labels', help='label set: built-in name (ms-cxr-t, the default) or a YAML/JSON file')
    classify.add_argument('--vocabulary', help='YAML/JSON file extending or overriding the clinical vocabulary the '
                          'answers are read with (clinical_text/vocabulary.yaml; see docs/readers.md)')
    classify.add_argument('--prompt-template', default=DEFAULT_PROMPT,
                          help='prompt made from an item, with {question}, {choices}, {observation} '
                          f'(default: {DEFAULT_PROMPT!r}); "{{question}}" sends the question alone')
    classify.add_argument('--scoring', choices=[GENERATIVE, LOGLIK], default=GENERATIVE,
                          help='generative: parse the answer `swift infer` generates; loglik (with --model): the class '
                          'whose answer text the model finds most likely after the prompt, nothing generated or parsed')
    classify.add_argument('--answer-template', default=DEFAULT_ANSWER_TEMPLATE,
                          help='loglik: the answer text scored for each class, with {choice}, {observation} '
                          f'(default: {DEFAULT_ANSWER_TEMPLATE!r}, the class name)')
    classify.add_argument('--batch-size', type=int, default=8, help='loglik: answer texts per forward pass (default 8)')
    classify.add_argument('--check-images', action='store_true', help='fail on a missing image (always on with --model)')
    classify.add_argument('--n-boot', type=int, default=DEFAULT_N_BOOT, help='bootstrap resamples (default 2000)')
    classify.add_argument('--seed', type=int, default=DEFAULT_SEED, help='bootstrap seed (default 0)')
    _csv_args(classify)
    classify.set_defaults(run=run_classify)

    items = commands.add_parser('items', help='items JSONL from the MS-CXR-T CSV or a CheXpert / NIH-style labels CSV')
    source = items.add_mutually_exclusive_group(required=True)
    source.add_argument('--ms-cxr-t', help='MS-CXR-T temporal image classification CSV (images under a MIMIC-CXR-JPG '
                        'root: files/pXX/pXXXXXXXX/sSSSSSSSS/<dicom_id>.jpg)')
    source.add_argument('--labels-csv', help='labelled image CSV: a Path column and observation columns holding '
                        '1 / 0 / -1 / blank (label set "presence")')
    items.add_argument('--image-root', required=True, help='MIMIC-CXR-JPG root, or the folder the Path column is '
                       'relative to')
    items.add_argument('--out', required=True, help='items JSONL to write (image paths relative to --image-root)')
    _csv_args(items)
    items.set_defaults(run=run_items)

    table = commands.add_parser('table', help='result JSONs -> Table 1 as Markdown (+ PNG bar chart)')
    table.add_argument('results', nargs='*', help='result JSONs written by classify')
    table.add_argument('--baseline', action='append', default=[],
                       help='result JSON listed first, marked as baseline; the Avg difference to it is added (repeatable)')
    table.add_argument('--published', action='store_true',
                       help='add the paper\'s published Table 1 rows, marked "(published)"')
    table.add_argument('--out', help='Markdown file to write; the PNG goes beside it (default: print only)')
    table.set_defaults(run=run_table)

    comp = commands.add_parser('compare', help='paired test of two models on the same items (McNemar, bootstrap); '
                               'given two report-gen results (*.gen.json), a paired bootstrap of clinical efficacy')
    comp.add_argument('a', help='result JSON of model A (e.g. SFT): from classify, or a *.gen.json from report-gen')
    comp.add_argument('b', help='result JSON of model B (e.g. APO), of the same kind as A')
    comp.add_argument('--n-boot', type=int, default=10000, help='paired bootstrap resamples (default 10000)')
    comp.add_argument('--seed', type=int, default=DEFAULT_SEED)
    comp.add_argument('--out', help='Markdown file to write; the JSON goes beside it (default: print only)')
    comp.set_defaults(run=run_compare)

    gen = commands.add_parser('report-gen', help='BLEU-1..4, ROUGE-L, METEOR (+ CheXbert / RadGraph F1 when installed)')
    _source_args(gen)
    gen.add_argument('--no-clinical', action='store_true', help='skip the CheXbert / RadGraph checks (clinical '
                     'efficacy labelled by the project\'s findings reader is always computed)')
    gen.add_argument('--reference-labels', metavar='FILE',
                     help='labels of the reference reports to score clinical efficacy against, instead of the '
                     'reader\'s: a CheXpert-style CSV keyed by study_id (e.g. MIMIC-CXR\'s mimic-cxr-2.0.0-chexpert.csv) '
                     'or id, or '
                     'JSONL {"id" or "study_id", "labels": {observation: 1/0/-1/null}}; the reader\'s agreement with '
                     'them is reported beside the F1')
    gen.add_argument('--n-boot', type=int, default=DEFAULT_N_BOOT,
                     help=f'bootstrap resamples for the clinical efficacy intervals (default {DEFAULT_N_BOOT})')
    gen.add_argument('--seed', type=int, default=DEFAULT_SEED)
    gen.set_defaults(run=run_report_gen)

    cons = commands.add_parser('consistency', help='chain-of-thought consistency: agreement of N sampled answers '
                               '(majority agreement, Fleiss kappa) and of each trace\'s reasoning with its answer')
    src = cons.add_mutually_exclusive_group(required=True)
    src.add_argument('--model', help='model or checkpoint folder: N samples are generated with `swift infer`')
    src.add_argument('--teachers', metavar='DATASET', help='CXR-MAX traces (a file data_prep reads, layout detected): '
                     'reasoning-answer consistency per teacher and agreement between teachers; no --dataset needed')
    src.add_argument('--answers', nargs='+', metavar='FILE', help='JSONL answer files: {"id", "response"|"answer"} '
                     'rows (several rows per id = several samples), or swift infer result rows (one sample per file)')
    cons.add_argument('--dataset', help='items JSONL (see docs/evaluation.md); required with --model / --answers')
    cons.add_argument('--out', required=True, help='output folder')
    cons.add_argument('--name', help='name in the outputs (default: from --model / the first --answers file)')
    cons.add_argument('--labels', help='label set: built-in name (ms-cxr-t, the default) or a YAML/JSON file')
    cons.add_argument('--image-root', help='folder the image paths are relative to (default: the dataset\'s folder)')
    cons.add_argument('--allow-outside-image-root', action='store_true')
    cons.add_argument('--prompt-template', default=DEFAULT_PROMPT, help='prompt made from an item (as for classify)')
    cons.add_argument('--samples', type=int, default=5, help='--model: samples per item (default 5)')
    cons.add_argument('--temperature', type=float, default=0.7, help='--model: sampling temperature (default 0.7)')
    cons.add_argument('--seed', type=int, default=0, help='--model: seed of the first sample; sample k uses seed+k')
    cons.add_argument('--infer-backend', choices=['auto', 'transformers', 'vllm'], default='auto')
    cons.add_argument('--adapters', nargs='+', default=[], metavar='CHECKPOINT')
    cons.add_argument('--max-new-tokens', type=int, default=512)
    cons.add_argument('--swift-args', default='', help='more `swift infer` arguments, one string')
    cons.set_defaults(run=run_consistency)

    paper = commands.add_parser('paper', help='the paper\'s experiment families from one YAML file, into one '
                                'Markdown report with charts (resumable)')
    paper.add_argument('--config', required=True, help='YAML file: models, answer files, datasets per family '
                       '(documented example: evaluation/paper.example.yaml)')
    paper.add_argument('--out', required=True, help='output folder: paper.md, charts, one folder per family')
    paper.set_defaults(run=run_paper, evaluation_parser=build_parser)
    return parser


def _csv_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--skip-missing', action='store_true', help='CSV input: leave out items whose image is '
                        'missing (counted and listed) instead of failing')
    parser.add_argument('--uncertain', choices=UNCERTAIN_POLICIES, default='skip',
                        help='labels CSV: what -1 (uncertain) means: skip (default: no item), present (U-Ones), '
                        'absent (U-Zeros)')


def _csv_items(path: str, kind: str, args) -> List[Dict]:
    image_root = os.path.abspath(args.image_root or os.path.dirname(os.path.abspath(path)))
    items, report = build_items(path, image_root, kind, args.skip_missing, args.uncertain)
    if report['missing']:
        print(f'evaluation: {len(report["missing"])} image(s) missing, {report["skipped_items"]} item(s) '
              f'skipped: ' + '; '.join(report['missing'][:10]) + (' ...' if len(report['missing']) > 10 else ''),
              file=sys.stderr)
    if kind == 'labels-csv':
        print(f'evaluation: {report["uncertain"]} uncertain (-1) label(s), policy --uncertain {args.uncertain}',
              file=sys.stderr)
    return items


def run_items(args) -> None:
    path, kind = (args.ms_cxr_t, 'ms-cxr-t') if args.ms_cxr_t else (args.labels_csv, 'labels-csv')
    items = _csv_items(path, kind, args)
    with output_set() as outputs:
        with outputs.open(args.out) as handle:
            handle.writelines(dump_row(row) for row in items)
    labels = '' if kind == 'ms-cxr-t' else ' --labels presence'
    print(f'evaluation items: wrote {len(items)} items to {args.out} (score with: python -m evaluation classify'
          f'{labels} --dataset {args.out} --image-root {args.image_root} ...)')


def _name(args) -> str:
    if args.name:
        return args.name
    path = Path(os.path.abspath(args.model or args.answers))
    name = path.stem if args.answers else path.name
    if args.model and name.startswith('checkpoint-'):
        name = f'{path.parent.name}-{name}'
    return name


def _answers(args, outputs, name: str, ids: List[str], requests: List[Dict]) -> Dict[str, Optional[str]]:
    """Writes the requests (and, with --model, swift infer's answers) into the output set; returns id -> answer."""
    with outputs.open(os.path.join(args.out, f'{name}.requests.jsonl')) as handle:
        handle.writelines(dump_row(row) for row in requests)
    if not args.model:
        return join_answers(ids, requests, args.answers)
    # swift picks the file type by extension: run it in a scratch folder, keep its answers with the outputs
    os.makedirs(args.out, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix='.swift-infer-', dir=args.out)
    try:
        requests_path, results_path = os.path.join(scratch, 'requests.jsonl'), os.path.join(scratch, 'answers.jsonl')
        with open(requests_path, 'w', encoding='utf-8') as handle:
            handle.writelines(dump_row(row) for row in requests)
        run_swift_infer(args.model, requests_path, results_path, backend=args.infer_backend,
                        max_new_tokens=args.max_new_tokens, adapters=args.adapters, extra_args=args.swift_args)
        if not os.path.exists(results_path):
            raise DataError('swift infer wrote no result file')
        answers = join_answers(ids, requests, results_path)
        with open(results_path, encoding='utf-8') as src, \
                outputs.open(os.path.join(args.out, f'{name}.answers.jsonl')) as handle:
            shutil.copyfileobj(src, handle)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return answers


def run_classify(args) -> None:
    loglik = args.scoring == LOGLIK
    if loglik and not args.model:
        raise DataError('--scoring loglik needs --model (it scores answer texts with the model)')
    if loglik and args.batch_size < 1:
        raise DataError('--batch-size must be at least 1')
    kind = csv_kind(args.dataset)
    label_set = PRESENCE if kind == 'labels-csv' and not args.labels else load_label_set(args.labels)
    vocabulary = load_vocabulary(args.vocabulary)
    if kind:
        scratch = tempfile.mkdtemp(prefix='.items-')
        try:
            items_path = os.path.join(scratch, 'items.jsonl')
            with open(items_path, 'w', encoding='utf-8') as handle:
                handle.writelines(dump_row(row) for row in _csv_items(args.dataset, kind, args))
            image_root = os.path.abspath(args.image_root or os.path.dirname(os.path.abspath(args.dataset)))
            items = read_items(items_path, label_set, image_root, check_images=True,
                               allow_outside_root=args.allow_outside_image_root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        items = read_items(args.dataset, label_set, args.image_root,
                           check_images=args.check_images or bool(args.model),
                           allow_outside_root=args.allow_outside_image_root)
    name = _name(args)
    requests = [request_row(item, args.prompt_template) for item in items]
    with output_set() as outputs:
        source = {'dataset': os.path.abspath(args.dataset), 'model': args.model, 'adapters': args.adapters,
                  'answers': args.answers, 'prompt_template': args.prompt_template}
        if loglik:
            with outputs.open(os.path.join(args.out, f'{file_name(name)}.requests.jsonl')) as handle:
                handle.writelines(dump_row(row) for row in requests)
            texts = answer_texts(items, args.answer_template)
            model, template = load_model_template(args.model, args.adapters, shlex.split(args.swift_args))
            scores = loglik_scores(items, requests, texts, model, template, args.batch_size)
            source['answer_template'] = args.answer_template
            result = score(items, {}, label_set, name, args.n_boot, args.seed, source, class_scores=scores)
        else:
            answers = _answers(args, outputs, file_name(name), [item.id for item in items], requests)
            source['vocabulary'] = args.vocabulary
            result = score(items, answers, label_set, name, args.n_boot, args.seed, source, vocabulary=vocabulary)
        stem = os.path.join(args.out, file_name(name) + ('.loglik' if loglik else ''))
        with outputs.open(stem + '.json') as handle:
            json.dump(result, handle, indent=1, ensure_ascii=False)
            handle.write('\n')
        table = markdown([{**result, '_path': stem + '.json'}])
        with outputs.open(stem + '.md') as handle:
            handle.write(table)
    print(table)
    avg = result['average']
    if loglik:
        print(f'evaluation classify (loglik): {avg["n"]} items, {avg["correct"]} correct (each item\'s answer-text '
              f'scores under "items" in {stem}.json); wrote {stem}.json, {stem}.md')
    else:
        print(f'evaluation classify: {avg["n"]} items, {avg["correct"]} correct, {avg["unparsed"]} unparsed '
              f'(listed under "unparsed" in {stem}.json); wrote {stem}.json, {stem}.md')


def run_table(args) -> None:
    paths = args.baseline + [p for p in args.results if p not in args.baseline]
    if not paths:
        raise DataError('no result files given')
    results = [load_result(p) for p in paths]
    table = markdown(results, published=args.published, baseline=len(args.baseline))
    if args.out:
        png = os.path.splitext(args.out)[0] + '.png'
        with output_set() as outputs:
            with outputs.open(args.out) as handle:
                handle.write(table + f'\n![Top-1 accuracy]({os.path.basename(png)})\n')
            bar_chart(results, outputs.temp_path(png), published=args.published)
        print(f'evaluation table: wrote {args.out}, {png}', file=sys.stderr)
    print(table)


def _is_gen_result(path: str) -> bool:
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False      # load_result says what is wrong
    return isinstance(data, dict) and data.get('format') == GEN_FORMAT


def run_compare(args) -> None:
    if _is_gen_result(args.a) or _is_gen_result(args.b):
        a, b = load_gen_result(args.a), load_gen_result(args.b)
        comparison = compare_gen(a, b, args.n_boot, args.seed)
        text = '\n'.join(compare_markdown_lines(a['model'], b['model'], comparison)) + '\n'
    else:
        a, b = load_result(args.a), load_result(args.b)
        comparison = compare(a, b, args.n_boot, args.seed)
        text = compare_markdown(a, b, comparison)
    if args.out:
        with output_set() as outputs:
            with outputs.open(args.out) as handle:
                handle.write(text)
            with outputs.open(os.path.splitext(args.out)[0] + '.json') as handle:
                json.dump(comparison, handle, indent=1)
                handle.write('\n')
    print(text)


def run_report_gen(args) -> None:
    items = read_report_items(args.dataset, args.image_root, allow_outside_root=args.allow_outside_image_root)
    name = _name(args)
    requests = [item.request for item in items]
    with output_set() as outputs:
        answers = _answers(args, outputs, file_name(name), [item.id for item in items], requests)
        missing = [item.id for item in items if answers[item.id] is None]
        hypotheses = [answers[item.id] or '' for item in items]
        references = [item.reference for item in items]
        result = {'format': GEN_FORMAT, 'model': name, 'dataset': os.path.abspath(args.dataset),
                  **text_metrics(hypotheses, references, clinical=not args.no_clinical),
                  'missing_answers': missing}
        given = _reference_labels(args.reference_labels, items) if args.reference_labels else None
        chexbert, unavailable = chexbert_labels(references) if not args.no_clinical else (None, 'not asked')
        result.update(gen_efficacy([item.id for item in items], hypotheses, references, args.n_boot, args.seed,
                                   given, chexbert))
        if args.reference_labels:
            result['reference_labels'] = os.path.abspath(args.reference_labels)
        if chexbert is None:
            result['unavailable']['chexbert_labels'] = unavailable
        stem = os.path.join(args.out, file_name(name))
        with outputs.open(stem + '.gen.json') as handle:
            json.dump(result, handle, indent=1, ensure_ascii=False)
            handle.write('\n')
        lines = [f'# Report generation: {name} ({result["n"]} items, {len(missing)} without an answer, scored as empty)',
                 '', '| metric | value |', '|---|---|']
        lines += [f'| {k} | {v:.4f} |' for k, v in result['metrics'].items()]
        lines += [f'| {k} | unavailable: {v} |' for k, v in result['unavailable'].items()]
        lines += [''] + markdown_lines(result['clinical_efficacy'])
        if 'reference_agreement' in result:
            title = f'The reader against the given reference labels ({args.reference_labels})'
            lines += [''] + agreement_markdown_lines(title, result['reference_agreement'])
        if 'chexbert_agreement' in result:
            lines += [''] + agreement_markdown_lines('The reader against CheXbert on the reference reports',
                                                     result['chexbert_agreement'])
        with outputs.open(stem + '.gen.md') as handle:
            handle.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


def _reference_labels(path: str, items) -> List[Dict[str, Optional[str]]]:
    """Each item's given reference labels as calls, found by its study id (data_prep's rows carry one) or its id."""
    labels = load_reference_labels(path)
    found, missing = [], []
    for item in items:
        keys = [study_key(item.study_id)] if item.study_id else []
        values = next((labels[k] for k in keys + [item.id, study_key(item.id)] if k in labels), None)
        if values is None:
            missing.append(item.study_id or item.id)
        found.append(as_calls(values or {}))
    if missing:
        raise DataError(f'{path}: no labels for {len(missing)} of {len(items)} reports (e.g. {missing[:3]}); the '
                        f'labels are found by the rows\' study_id, else their id')
    return found


def _answer_samples(ids: List[str], requests: List[Dict], paths: List[str]) -> Dict[str, List[Optional[str]]]:
    from .consistency import read_samples
    samples: Dict[str, List[Optional[str]]] = {i: [] for i in ids}
    for path in paths:
        first = next((s.row for s in iter_rows(path) if isinstance(s.row, dict)), {}) if os.path.isfile(path) else {}
        if 'id' in first or not os.path.isfile(path):
            got = read_samples(ids, [path])
            for i in ids:
                samples[i] += got[i]
        else:
            for i, answer in join_answers(ids, requests, path).items():
                if answer is not None:
                    samples[i].append(answer)
    return samples


def consistency_infer_commands(args, requests_path: str, scratch: str):
    """(seed, result path, swift infer extra args) of each sample run."""
    from .consistency import sample_command_args
    return [(args.seed + k, os.path.join(scratch, f'answers.{k}.jsonl'),
             sample_command_args(args.temperature, args.seed + k, args.swift_args)) for k in range(args.samples)]


def _run_teachers(args) -> None:
    from data_prep.columns import ColumnMapping
    from data_prep.outputs import Tally
    from datafiles.images import ImagePolicy
    from data_prep.studies import StudyReader
    from .consistency import teacher_consistency, teacher_markdown
    root = os.path.abspath(args.image_root or os.path.dirname(os.path.abspath(args.teachers)))
    reader = StudyReader(args.teachers, 'train', ColumnMapping(), ImagePolicy(root, args.allow_outside_image_root),
                         Tally('consistency'))
    result = teacher_consistency(reader)
    result['source'] = {'teachers': os.path.abspath(args.teachers)}
    stem = os.path.join(args.out, file_name(args.name or Path(args.teachers).stem) + '.teachers.consistency')
    text = teacher_markdown(result)
    with output_set() as outputs:
        with outputs.open(stem + '.json') as handle:
            json.dump(result, handle, indent=1, ensure_ascii=False)
            handle.write('\n')
        with outputs.open(stem + '.md') as handle:
            handle.write(text)
    print(text)
    print(f'evaluation consistency: wrote {stem}.json, {stem}.md')


def run_consistency(args) -> None:
    from .consistency import consistency, markdown as cons_markdown
    if args.samples < 1:
        raise DataError('--samples must be at least 1')
    if args.teachers:
        return _run_teachers(args)
    if not args.dataset:
        raise DataError('--dataset is required with --model / --answers')
    label_set = load_label_set(args.labels)
    items = read_items(args.dataset, label_set, args.image_root, check_images=bool(args.model),
                       allow_outside_root=args.allow_outside_image_root)
    ids = [item.id for item in items]
    requests = [request_row(item, args.prompt_template) for item in items]
    name = args.name or (_name(argparse.Namespace(name=None, model=args.model, answers=None)) if args.model
                         else Path(args.answers[0]).stem)
    stem = os.path.join(args.out, file_name(name) + '.consistency')
    with output_set() as outputs:
        if args.model:
            os.makedirs(args.out, exist_ok=True)
            scratch = tempfile.mkdtemp(prefix='.swift-infer-', dir=args.out)
            try:
                requests_path = os.path.join(scratch, 'requests.jsonl')
                with open(requests_path, 'w', encoding='utf-8') as handle:
                    handle.writelines(dump_row(row) for row in requests)
                paths = []
                for seed, path, extra in consistency_infer_commands(args, requests_path, scratch):
                    run_swift_infer(args.model, requests_path, path, backend=args.infer_backend,
                                    max_new_tokens=args.max_new_tokens, adapters=args.adapters, extra_args=extra)
                    if not os.path.exists(path):
                        raise DataError(f'swift infer (seed {seed}) wrote no result file')
                    paths.append(path)
                samples = _answer_samples(ids, requests, paths)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        else:
            samples = _answer_samples(ids, requests, args.answers)
        result = consistency(items, samples, label_set, name)
        result['source'] = {'dataset': os.path.abspath(args.dataset), 'model': args.model, 'answers': args.answers,
                            'samples': args.samples if args.model else None,
                            'temperature': args.temperature if args.model else None,
                            'seed': args.seed if args.model else None}
        with outputs.open(stem + '.json') as handle:
            json.dump(result, handle, indent=1, ensure_ascii=False)
            handle.write('\n')
        text = cons_markdown(result)
        with outputs.open(stem + '.md') as handle:
            handle.write(text)
    print(text)
    print(f'evaluation consistency: wrote {stem}.json, {stem}.md')


def main(argv: Optional[List[str]] = None) -> int:
    return run_command(build_parser(), 'evaluation', argv)

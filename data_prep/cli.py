"""``python -m data_prep {sft,consensus,apo,pending,merge,report,findings}``: the thin command line over the
stages, and the findings reader on one text."""
import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from importlib import resources
from typing import List, Optional

from tqdm import tqdm

from clinical_text import FindingsReader, load_vocabulary
from clinical_text.labels import load_labels_csv, study_key
from datafiles import (DataError, OutputSet, SourceRow, derived_path, is_local_file, iter_rows, output_set,
                       run_command)
from datafiles.images import ImagePolicy
from datafiles.swift_rows import request_fingerprint

from .columns import PER_STUDY, PER_TRACE, ColumnMapping, load_mapping_file, merge, parse_pairs
from .outputs import Tally, rejects_row, write_rows
from .records import Trace
from .report import CONSENSUS
from .results import merge_parts, write_pending
from .stages import (EVAL, TRAIN, ConsensusTemplate, apo_row, consensus_problem, consensus_request, kept_traces,
                     sft_rows, split_of, user_turn)
from .studies import StudyReader


def _common(parser: argparse.ArgumentParser, split_output: bool = False, refusals: bool = True) -> None:
    src = parser.add_argument_group('input')
    src.add_argument('--dataset', required=True,
                     help='Hugging Face dataset id, local dataset folder, or .jsonl/.json/.parquet/.csv file')
    src.add_argument('--split', default='train', help='split of a Hugging Face dataset (default: train)')
    src.add_argument('--image-root', help='folder the image paths are relative to (default: the dataset file\'s '
                     'folder for a local file, else the current folder)')
    src.add_argument('--allow-outside-image-root', action='store_true',
                     help='accept absolute image paths and paths with .. that leave the image root')
    src.add_argument('--check-images', action='store_true', help='verify that every image exists and decodes')
    src.add_argument('--skip-invalid', action='store_true',
                     help='skip invalid rows (counted by reason, listed in <out>.rejects.jsonl) instead of failing')
    cols = parser.add_argument_group('column mapping (overrides detection; see data_prep/columns.py)')
    cols.add_argument('--mapping', help='YAML file with any of the keys below (flags win over it)')
    cols.add_argument('--layout', choices=[PER_TRACE, PER_STUDY])
    for name, what in [('study', 'study id'), ('subject', 'subject (patient) id'), ('image', 'image path(s)'),
                       ('question', 'question'), ('teacher', 'teacher name (per-trace)'),
                       ('trace', 'teacher trace (per-trace)'), ('traces', 'dict/list of all traces (per-study)'),
                       ('labels', 'labels')]:
        cols.add_argument(f'--{name}-column', help=f'column holding the {what}')
    cols.add_argument('--teacher-columns', help='per-study layout, one column per teacher: NAME=COLUMN,NAME=COLUMN')
    cols.add_argument('--teachers', help='comma-separated teacher names to accept; any other teacher is an error')
    if refusals:
        parser.add_argument('--drop-refusals', action='store_true',
                            help='also drop refusals (see data_prep/text.py); empty traces are always dropped')
    parser.add_argument('--seed', type=int, default=42, help='seed of the split and of the source order')
    if split_output:
        parser.add_argument('--eval-fraction', type=float, default=0.05,
                            help='fraction of subjects (patients) held out into <out>.eval.jsonl (default 0.05)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m data_prep',
        description='CXR-MAX (or any dataset of its shape) to ms-swift JSONL for the three APO stages, and a drift report.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    sft = commands.add_parser('sft', help='SFT rows: one per (study, teacher trace)')
    _common(sft, split_output=True)
    sft.add_argument('--out', required=True, help='output JSONL (train split); the eval split goes beside it')
    sft.set_defaults(run=run_sft)

    consensus = commands.add_parser('consensus', help='swift infer requests: one consensus prompt per study')
    _common(consensus)
    consensus.add_argument('--out', required=True, help='output JSONL of requests')
    consensus.add_argument('--prompt-template', help='text file with {question}, {sources} and optionally '
                           '{num_sources} (default: data_prep/templates/consensus.txt)')
    consensus.set_defaults(run=run_consensus)

    apo = commands.add_parser('apo', help='APO rows: the consensus as chosen, the teachers\' traces as rejected')
    _common(apo, split_output=True)
    apo.add_argument('--consensus', required=True, help='swift infer --result_path file with the consensus answers')
    apo.add_argument('--requests', required=True, help='the requests file given to swift infer (from `consensus`)')
    apo.add_argument('--out', required=True, help='output JSONL (train split); the eval split goes beside it')
    apo.set_defaults(run=run_apo)

    pending = commands.add_parser('pending', help='the consensus requests that swift infer has not answered yet '
                                  '(resume an interrupted infer run without redoing or duplicating studies)')
    pending.add_argument('--requests', required=True, help='the requests file (from `consensus`)')
    pending.add_argument('--results', required=True, help='the results file (swift infer --result_path, or merged); '
                         'only read: a last line without its newline counts when it is a complete answer')
    pending.add_argument('--parts', help='folder of the per-shard results files of earlier runs, read as well')
    pending.add_argument('--out', required=True, help='output JSONL: the requests still to answer')
    pending.add_argument('--shards', type=int, help='deal the requests round-robin over N files '
                         '<out>.shard0.jsonl ... instead of writing <out>')
    pending.set_defaults(run=run_pending)

    merge = commands.add_parser('merge', help='fold the per-shard results files into the results file '
                                '(one answer per request, in request order; temporary file and rename)')
    merge.add_argument('--requests', required=True, help='the requests file (from `consensus`)')
    merge.add_argument('--results', required=True, help='the results file, rewritten with the parts merged in')
    merge.add_argument('--parts', required=True, help='folder of per-shard results files; removed once merged')
    merge.set_defaults(run=run_merge)

    report = commands.add_parser('report', help='drift report: per teacher, per observation, teacher agreement')
    _common(report, refusals=False)
    report.add_argument('--out', required=True,
                        help='output folder (drift.md, drift.json, agreement.png, accuracy.png)')
    report.add_argument('--labels-csv', help="MIMIC-CXR-JPG's mimic-cxr-2.0.0-chexpert.csv: the study labels, joined "
                        'by study id (default: the dataset\'s label columns)')
    report.add_argument('--consensus', help='swift infer --result_path file with the consensus answers: scored '
                        'as one more source, "consensus", next to the teachers (needs --requests)')
    report.add_argument('--requests', help='the requests file given to swift infer (from `consensus`)')
    report.add_argument('--source', action='append', default=[], metavar='NAME=FILE',
                        help='a model\'s answers (e.g. a student\'s), scored beside the teachers and tested against '
                        'the best teacher (McNemar): JSONL of swift infer result rows or {"id", "response"} rows, '
                        'joined to the studies by "id" (or "study_id"); repeat for several models')
    report.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='processes reading the traces (default: one per core)')
    report.add_argument('--vocabulary', help=VOCABULARY_HELP)
    report.set_defaults(run=run_report)

    findings = commands.add_parser('findings', help='read one text (a trace, a report) into the 14 CheXpert '
                                   'observations; --explain shows the cue and span behind each call')
    findings.add_argument('text', help='the text itself, or a file holding it (read as UTF-8; "-": standard input)')
    findings.add_argument('--explain', action='store_true', help='per observation: the call, the cue and rule that '
                          'decided it, the words that named the observation and their sentence')
    findings.add_argument('--json', action='store_true', help='print JSON instead of a table')
    findings.add_argument('--vocabulary', help=VOCABULARY_HELP)
    findings.set_defaults(run=run_findings)
    return parser


VOCABULARY_HELP = ('YAML/JSON file extending or overriding the clinical vocabulary of the findings reader '
                   '(clinical_text/vocabulary.yaml; see docs/readers.md)')


def _given_mapping(args) -> ColumnMapping:
    base = load_mapping_file(args.mapping) if args.mapping else ColumnMapping()
    flags = ColumnMapping(
        layout=args.layout, study=args.study_column, subject=args.subject_column, images=args.image_column,
        question=args.question_column, teacher=args.teacher_column, trace=args.trace_column,
        traces=args.traces_column, labels=args.labels_column,
        teacher_columns=parse_pairs(args.teacher_columns, '--teacher-columns') if args.teacher_columns else {},
        teachers=[t.strip() for t in args.teachers.split(',') if t.strip()] if args.teachers else None)
    return merge(base, flags)


def _image_root(args) -> str:
    if args.image_root:
        return args.image_root
    return os.path.dirname(os.path.abspath(args.dataset)) if is_local_file(args.dataset) else os.getcwd()


class Run:
    """What every subcommand shares: the reader, the outputs, the tally and the rejects file."""

    def __init__(self, args, outputs: OutputSet, rejects_of: Optional[str]):
        self.args, self.outputs = args, outputs
        self.tally = Tally(args.command)
        self._rejects = None
        if args.skip_invalid:
            self.rejects_path = derived_path(rejects_of, 'rejects') if rejects_of.endswith('.jsonl') else \
                os.path.join(rejects_of, 'rejects.jsonl')
            self._rejects = outputs.open(self.rejects_path)
            self.tally.wrote[self.rejects_path] = 0
        self.reader = StudyReader(args.dataset, args.split, _given_mapping(args),
                                  ImagePolicy(_image_root(args), args.allow_outside_image_root), self.tally,
                                  check_images=args.check_images, on_invalid=self._skip if args.skip_invalid else None)
        print(f'data_prep {args.command}: detected {self.reader.mapping.describe()}', file=sys.stderr)

    def _skip(self, error: DataError, source: SourceRow) -> None:
        self.tally.skipped[error.reason] += 1
        self._rejects.write(json.dumps(rejects_row(source.where, error.reason, str(error), source.raw, source.row),
                                       ensure_ascii=False, default=str) + '\n')
        self.tally.wrote[self.rejects_path] += 1

    def split_writers(self, out: str):
        """{train: file, eval: file}; the eval file only when a fraction is held out."""
        paths = {TRAIN: out}
        if self.args.eval_fraction > 0:
            paths[EVAL] = derived_path(out, 'eval')
        handles = {split: self.outputs.open(path) for split, path in paths.items()}
        for path in paths.values():
            self.tally.wrote[path] = 0
        return paths, handles

    def usable_traces(self, study):
        """The study's traces worth using; the others are counted by reason."""
        traces, dropped = kept_traces(study, self.args.drop_refusals)
        for reason in dropped:
            self.tally.drop(reason)
        return traces

    def split(self, study) -> str:
        if self.args.eval_fraction > 0 and study.head.subject_id is None:
            raise DataError(f'{study.where}: no subject (patient) id to split by; map one with --subject-column, '
                            f'or pass --eval-fraction 0')
        return split_of(study.head.subject_id, self.args.seed, self.args.eval_fraction)

    def finish(self) -> None:
        print(self.tally.format())


def run_sft(args) -> None:
    with output_set() as outputs:
        run = Run(args, outputs, args.out)
        paths, handles = run.split_writers(args.out)
        for study in run.reader:
            traces = run.usable_traces(study)
            split = run.split(study)
            write_rows(handles[split], sft_rows(study, traces), run.tally, paths[split])
        run.finish()


def _load_template(path: Optional[str]) -> ConsensusTemplate:
    if path is None:
        text = resources.files('data_prep').joinpath('templates/consensus.txt').read_text(encoding='utf-8')
        return ConsensusTemplate.parse(text, 'data_prep/templates/consensus.txt')
    try:
        with open(path, encoding='utf-8') as f:
            return ConsensusTemplate.parse(f.read(), path)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f'{path}: cannot read the prompt template ({e})') from None


def run_consensus(args) -> None:
    template = _load_template(args.prompt_template)
    with output_set() as outputs:
        run = Run(args, outputs, args.out)
        handle = outputs.open(args.out)
        run.tally.wrote[args.out] = 0
        for study in run.reader:
            traces = run.usable_traces(study)
            if not traces:
                run.tally.drop('study without any usable trace')
                continue
            write_rows(handle, [consensus_request(study, traces, template, args.seed)], run.tally, args.out)
        run.finish()


def read_consensus(requests_path: str, results_path: str, drop_refusals: bool, tally: Tally):
    """study id -> consensus answer, joining swift infer's result rows to the requests by fingerprint."""
    keys_by_fingerprint = {}
    for source in tqdm(iter_rows(requests_path), desc=f'reading {requests_path}', unit=' rows', disable=None):
        study_id = _checked(source, 'study_id')
        keys_by_fingerprint.setdefault(request_fingerprint(source.row), []).append(study_id)
    answers, results = {}, 0
    for source in tqdm(iter_rows(results_path), desc=f'reading {results_path}', unit=' rows', disable=None):
        results += 1
        answer = _checked(source, 'response', allow_empty=True)
        keys = [source.row['study_id']] if isinstance(source.row.get('study_id'), str) else \
            keys_by_fingerprint.get(request_fingerprint(source.row))
        if keys is None:
            raise DataError(f'{source.where}: field \'messages\': this answer\'s prompt and images match no request '
                            f'in {requests_path}; were both files made from the same dataset and template?',
                            'unknown request')
        for key in keys:
            if key in answers:
                tally.drop('duplicate consensus answer (first kept)')
                continue
            problem = consensus_problem(answer, drop_refusals)
            answers[key] = None if problem else answer
            if problem:
                tally.drop(problem)
    tally.read[requests_path] = f'{sum(len(k) for k in keys_by_fingerprint.values())} requests'
    tally.read[results_path] = f'{results} answers'
    return answers


def _checked(source: SourceRow, field: str, allow_empty: bool = False):
    if source.problem is not None:
        raise DataError(f'{source.where}: {source.problem}')
    value = source.row.get(field)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        problem = 'missing' if value is None else f'expected text, found {type(value).__name__}'
        raise DataError(f'{source.where}: field {field!r}: {problem}')
    return value


def run_apo(args) -> None:
    with output_set() as outputs:
        run = Run(args, outputs, args.out)
        answers = read_consensus(args.requests, args.consensus, args.drop_refusals, run.tally)
        paths, handles = run.split_writers(args.out)
        for study in run.reader:
            if study.head.study_id not in answers:
                run.tally.drop('study without a consensus answer')
                continue
            answer = answers.pop(study.head.study_id)
            if answer is None:
                continue  # counted when the answer was read
            row, dropped = apo_row(study, answer, args.drop_refusals)
            for reason in dropped:
                run.tally.drop(f'rejected trace: {reason}')
            if row is None:
                run.tally.drop('study left without a rejected answer')
                continue
            split = run.split(study)
            write_rows(handles[split], [row], run.tally, paths[split])
        if answers:
            run.tally.notes.append(f'{len(answers)} consensus answers belong to no study of the dataset, e.g. '
                                   f'{sorted(answers)[:3]}')
        run.finish()


def _requests(path: str):
    for source in tqdm(iter_rows(path), desc=f'reading {path}', unit=' rows', disable=None):
        _checked(source, 'study_id')
        yield source


def run_pending(args) -> None:
    if args.shards is not None and args.shards < 1:
        raise DataError(f'--shards {args.shards}: needs at least 1')
    tally = Tally(args.command)
    write_pending(_requests(args.requests), args.results, args.parts, args.out, args.shards, tally)
    print(tally.format())


def run_merge(args) -> None:
    tally = Tally(args.command)
    merge_parts(_requests(args.requests), args.results, args.parts, tally)
    print(tally.format())


def _with_consensus(studies, answers):
    """Each study with its consensus answer as one more trace, from the source CONSENSUS."""
    for study in studies:
        if any(t.teacher == CONSENSUS for t in study.traces):
            raise DataError(f'{study.where}: a teacher is named {CONSENSUS!r}, the name the report gives the '
                            'consensus answers')
        answer = answers.get(study.head.study_id)
        yield replace(study, traces=study.traces + (Trace(CONSENSUS, answer),)) if answer else study


def _source_spec(spec: str):
    name, sep, path = spec.partition('=')
    name = name.strip()
    if not sep or not name or not path:
        raise DataError(f'--source {spec!r}: expected NAME=FILE (e.g. apo=results/apo.jsonl)')
    if name == CONSENSUS:
        raise DataError(f'--source {spec!r}: {CONSENSUS!r} is the name of the consensus answers (--consensus)')
    if not os.path.isfile(path):
        raise DataError(f'--source {spec!r}: {path}: no such file')
    return name, path


FINGERPRINT = 'request:'     # key prefix of a --source answer joined by its request, not by an id


def _study_fingerprint(study) -> str:
    """The fingerprint of the study's own question as data_prep writes it (``sft`` rows, ``sft.eval.jsonl``)."""
    return FINGERPRINT + request_fingerprint({'messages': [user_turn(study, study.head.question)],
                                              'images': list(study.head.images)})


def read_source(name: str, path: str, tally: Tally) -> dict:
    """study key -> answer text of one ``--source`` file. Rows with an ``id`` (or ``study_id``) are joined by it;
    swift infer result rows without one by their request (user turn and images, as ``apo`` joins the consensus),
    which matches the studies' own questions as data_prep writes them (``sft.eval.jsonl``). A row that cannot be
    read, lacks an id (and a request) or an answer text, or repeats an id is an error naming the file, line and
    field; a repeated request (one per teacher in ``sft.eval.jsonl``) keeps its first answer and is counted."""
    answers, lines = {}, {}
    for source in tqdm(iter_rows(path), desc=f'reading {path}', unit=' rows', disable=None):
        if source.problem is not None:
            raise DataError(f'{source.where}: {source.problem}')
        row = source.row
        field = 'id' if 'id' in row else 'study_id' if 'study_id' in row else None
        if field is None and not isinstance(row.get('messages'), list):
            raise DataError(f'{source.where}: field \'id\': missing (each --source row needs "id" or "study_id", '
                            'the study it answers, or the "messages" and "images" of swift infer\'s result rows)')
        if field is not None and (not isinstance(row[field], (str, int)) or isinstance(row[field], bool)
                                  or not str(row[field]).strip()):
            raise DataError(f'{source.where}: field {field!r}: expected a study id, found {row[field]!r}')
        text_field = 'response' if 'response' in row else 'answer' if 'answer' in row else None
        if text_field is None:
            raise DataError(f'{source.where}: field \'response\': missing (the answer text; "answer" is also read)')
        if row[text_field] is not None and not isinstance(row[text_field], str):
            raise DataError(f'{source.where}: field {text_field!r}: expected text, found '
                            f'{type(row[text_field]).__name__}')
        key = study_key(row[field]) if field else FINGERPRINT + request_fingerprint(row)
        if key in answers:
            if field is None:
                tally.drop(f'--source {name}: a second answer to the same request (first kept)')
                continue
            raise DataError(f'{source.where}: field {field!r}: study {row[field]!r} already answered at {lines[key]} '
                            f'(one answer per study and --source)')
        answers[key], lines[key] = row[text_field] or '', source.where
    tally.read[path] = f'{len(answers)} answers of {name}'
    return answers, lines


def _with_sources(studies, sources: dict, joined: dict):
    """Each study with each --source's answer as one more trace; ``joined[name]`` collects the matched keys."""
    for study in studies:
        key, fingerprint = study_key(study.head.study_id), None
        extra = []
        for name, answers in sources.items():
            if any(t.teacher == name for t in study.traces):
                raise DataError(f'{study.where}: a teacher is named {name!r}, the name of a --source')
            if key not in answers:
                fingerprint = fingerprint or _study_fingerprint(study)
            found = key if key in answers else fingerprint if fingerprint in answers else None
            if found is not None:
                joined[name].add(found)
                extra.append(Trace(name, answers[found]))
        yield replace(study, traces=study.traces + tuple(extra)) if extra else study


def run_report(args) -> None:
    if bool(args.consensus) != bool(args.requests):
        raise DataError('report: --consensus and --requests go together')
    specs = [_source_spec(spec) for spec in args.source]
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise DataError(f'--source: a name is given twice: {names}')
    from .report import DriftReport, read_studies
    load_vocabulary(args.vocabulary)      # a bad vocabulary file stops the report before any work
    labels = load_labels_csv(args.labels_csv) if args.labels_csv else None
    with output_set() as outputs:
        run = Run(args, outputs, args.out)
        report = DriftReport(labels, f'--labels-csv {args.labels_csv}' if labels is not None else 'the dataset',
                             students=names)
        studies = run.reader
        if args.consensus:
            answers = read_consensus(args.requests, args.consensus, False, run.tally)
            studies = _with_consensus(run.reader, answers)
        read = {name: read_source(name, path, run.tally) for name, path in specs}
        sources = {name: answers for name, (answers, _) in read.items()}
        joined = {name: set() for name in sources}
        if sources:
            studies = _with_sources(studies, sources, joined)
        for study, reads in read_studies(studies, args.workers, vocabulary=args.vocabulary):
            report.add(study, reads)
        for name, path in specs:
            answers, lines = read[name]
            unknown = sorted(set(answers) - joined[name], key=lambda k: (k.startswith(FINGERPRINT), k))
            examples = [f'request at {lines[k]}' if k.startswith(FINGERPRINT) else k for k in unknown[:5]]
            report.source_files[name] = {'file': path, 'rows': len(answers), 'joined': len(joined[name]),
                                         'unknown_ids': len(unknown), 'unknown_examples': examples}
            if unknown:
                run.tally.notes.append(f'--source {name}: {len(unknown)} of {len(answers)} answers belong to no '
                                       f'study of the dataset (e.g. {examples[:3]}); they are not scored')
        report.write(args.out, outputs, run.tally)
        run.finish()


def _findings_text(spec: str) -> str:
    if spec == '-':
        return sys.stdin.read()
    if os.path.isfile(spec):
        with open(spec, 'rb') as f:
            return f.read().decode('utf-8', errors='replace')
    return spec


def run_findings(args) -> None:
    reader = FindingsReader(load_vocabulary(args.vocabulary))
    decisions = reader.explain(_findings_text(args.text))
    if args.json:
        print(json.dumps({o: asdict(d) if args.explain else d.call for o, d in decisions.items()}, indent=1,
                         ensure_ascii=False))
        return
    for observation, d in decisions.items():
        call = d.call or 'not mentioned'
        if not args.explain or d.call is None:
            print(f'{observation:27} {call}')
            continue
        cue = f'cue "{d.cue}"' if d.cue else 'no cue'
        print(f'{observation:27} {call:10} {cue} ({d.rule})' + (f'; span "{d.span}"' if d.span else '') +
              (f' in: {d.sentence}' if d.sentence else ''))


def main(argv: Optional[List[str]] = None) -> int:
    return run_command(build_parser(), 'data_prep', argv)

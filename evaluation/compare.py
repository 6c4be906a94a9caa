"""Two result JSONs on the same items -> a paired comparison: McNemar's exact test per observation and over
all items, and a paired bootstrap of the difference in Avg (mean over observations). Two report-generation
results on the same reports -> a paired bootstrap of each clinical efficacy statistic (``compare_gen``)."""
from typing import Any, Dict, Mapping, Optional, Sequence

from datafiles import DataError

from .clinical_efficacy import GIVEN, LABELLER, agreement, compare_efficacy, efficacy, label_reports
from .metrics import DEFAULT_N_BOOT, DEFAULT_SEED, accuracy, mcnemar_exact, paired_bootstrap
from .table import read_result_file


def compare(a: Dict, b: Dict, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    a_items = {row['id']: row for row in a['items']}
    b_items = {row['id']: row for row in b['items']}
    if set(a_items) != set(b_items):
        only_a, only_b = sorted(set(a_items) - set(b_items)), sorted(set(b_items) - set(a_items))
        raise DataError(f'{a.get("_path", "A")} and {b.get("_path", "B")} were not scored on the same items: '
                        f'{len(only_a)} only in A (e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]})')
    for item_id, row in a_items.items():
        other = b_items[item_id]
        if (row['observation'], row['gold']) != (other['observation'], other['gold']):
            raise DataError(f'item {item_id!r}: A has {row["observation"]}/{row["gold"]}, B has '
                            f'{other["observation"]}/{other["gold"]}: not the same dataset')
    ids = [row['id'] for row in a['items']]
    observations = list(dict.fromkeys(a_items[i]['observation'] for i in ids))
    a_groups = {obs: [a_items[i]['correct'] for i in ids if a_items[i]['observation'] == obs] for obs in observations}
    b_groups = {obs: [b_items[i]['correct'] for i in ids if a_items[i]['observation'] == obs] for obs in observations}
    per_obs = {obs: {'n': len(a_groups[obs]), 'a': accuracy(a_groups[obs]), 'b': accuracy(b_groups[obs]),
                     'mcnemar': mcnemar_exact(a_groups[obs], b_groups[obs])} for obs in observations}
    a_all = [a_items[i]['correct'] for i in ids]
    b_all = [b_items[i]['correct'] for i in ids]
    return {'a': a['model'], 'b': b['model'], 'n_items': len(ids), 'observations': per_obs,
            'pooled': {'a': accuracy(a_all), 'b': accuracy(b_all), 'mcnemar': mcnemar_exact(a_all, b_all)},
            'paired_bootstrap': paired_bootstrap(a_groups, b_groups, n_boot, seed)}


GEN_FORMAT = 'swift-apo/report-gen/v1'


def gen_efficacy(ids: Sequence[str], hypotheses: Sequence[str], references: Sequence[str],
                 n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED, given: Optional[Sequence[Mapping]] = None,
                 chexbert: Optional[Sequence[Mapping]] = None) -> Dict[str, Any]:
    """The report-gen result's clinical efficacy block and its per-report labels (kept so that ``compare`` can
    pair two models' reports without reading them again). With ``given`` reference labels, those are the
    reference and the reader's agreement with them on the reference reports is reported beside; with
    ``chexbert`` labels of the reference reports, the reader's agreement with CheXbert too."""
    hyp, read = label_reports(hypotheses), label_reports(references)
    ref = read if given is None else list(given)
    result = {'clinical_efficacy': efficacy(hyp, ref, n_boot, seed, LABELLER if given is None else GIVEN),
              'labels': [{'id': i, 'generated': h, 'reference': r} for i, h, r in zip(ids, hyp, ref)]}
    if given is not None:
        result['reference_agreement'] = agreement(read, ref)
    if chexbert is not None:
        result['chexbert_agreement'] = agreement(read, chexbert, binary_only=True)
    return result


def load_gen_result(path: str) -> Dict[str, Any]:
    result = read_result_file(path, GEN_FORMAT, 'report-generation', 'report-gen',
                              '; both files of a compare must be of the same kind')
    for field in ('model', 'labels'):
        if field not in result:
            raise DataError(f'{path}: field {field!r} missing (written by an older report-gen? run it again)')
    for k, row in enumerate(result['labels']):
        for field in ('id', 'generated', 'reference'):
            if not isinstance(row, dict) or field not in row:
                raise DataError(f'{path}: labels[{k}]: field {field!r} missing')
    return result


def compare_gen(a: Dict, b: Dict, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    """Two report-gen results on the same reports -> paired bootstrap of each clinical efficacy statistic."""
    a_rows = {row['id']: row for row in a['labels']}
    b_rows = {row['id']: row for row in b['labels']}
    if set(a_rows) != set(b_rows):
        only_a, only_b = sorted(set(a_rows) - set(b_rows)), sorted(set(b_rows) - set(a_rows))
        raise DataError(f'{a.get("_path", "A")} and {b.get("_path", "B")} were not scored on the same reports: '
                        f'{len(only_a)} only in A (e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]})')
    ids = [row['id'] for row in a['labels']]
    for i in ids:
        if a_rows[i]['reference'] != b_rows[i]['reference']:
            raise DataError(f'report {i!r}: the reference labels differ between {a.get("_path", "A")} and '
                            f'{b.get("_path", "B")}: not the same dataset (or another reader version)')
    result = compare_efficacy([a_rows[i]['generated'] for i in ids], [b_rows[i]['generated'] for i in ids],
                              [a_rows[i]['reference'] for i in ids], n_boot, seed)
    return {'a': a['model'], 'b': b['model'], **result}

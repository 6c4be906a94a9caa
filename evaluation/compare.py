"""Two result JSONs on the same items -> a paired comparison: McNemar's exact test per observation and over
all items, and a paired bootstrap of the difference in Avg (mean over observations)."""
from typing import Any, Dict

from data_prep.sources import DataError

from .metrics import DEFAULT_N_BOOT, DEFAULT_SEED, accuracy, mcnemar_exact, paired_bootstrap


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

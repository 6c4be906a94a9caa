"""CXR-MAX-shaped test inputs in every supported layout and file type, built from the bundled sample
(sample_data/: per-trace rows with real-looking teacher text, a refusal, an empty trace, non-ASCII
text, and small JPGs at MIMIC-CXR paths)."""
import csv
import json
import shutil
from pathlib import Path
from typing import Dict, List

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / 'sample_data'
SAMPLE_FILE = SAMPLE / 'cxr_max_sample.jsonl'


def sample_rows() -> List[Dict]:
    return [json.loads(line) for line in SAMPLE_FILE.read_text(encoding='utf-8').splitlines()]


def copy_images(folder: Path) -> None:
    shutil.copytree(SAMPLE / 'files', folder / 'files', dirs_exist_ok=True)


def per_study_rows(style: str) -> List[Dict]:
    """The sample grouped by study: 'columns' (one column per teacher), 'dict' or 'list' (one traces column)."""
    studies: Dict[int, Dict] = {}
    for row in sample_rows():
        study = studies.setdefault(row['study_id'], {k: row[k] for k in ('subject_id', 'study_id', 'image_path',
                                                                          'question', 'labels')})
        if style == 'columns':
            study[row['model']] = row['response']
        elif style == 'dict':
            study.setdefault('answers', {})[row['model']] = row['response']
        else:
            study.setdefault('answers', []).append({'model': row['model'], 'response': row['response']})
    return list(studies.values())


def write_jsonl(path: Path, rows: List[Dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows), encoding='utf-8')
    return path


def write_parquet(path: Path, rows: List[Dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_csv(path: Path, rows: List[Dict]) -> Path:
    with open(path, 'w', encoding='utf-8', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    return path


def infer_result_rows(requests: List[Dict], answer) -> List[Dict]:
    """Rows shaped as ms-swift 4.6 ``swift infer --result_path`` writes them: the response, the messages
    with the answer appended, images as {bytes, path}, and no unknown column (study_id is dropped)."""
    rows = []
    for request in requests:
        response = answer(request)
        rows.append({'response': response, 'labels': None, 'logprobs': None,
                     'messages': request['messages'] + [{'role': 'assistant', 'content': response}],
                     'images': [{'bytes': None, 'path': p} for p in request['images']], 'dataset': 'requests.jsonl'})
    return rows

"""data_prep at full CXR-MAX scale: wall time, rows/s and peak RSS of each subcommand.

Writes a synthetic per-trace dataset (default 24,426 studies x 7 teachers = 170,982 traces of about
1,500 characters; image paths only, no image files), then runs each subcommand in its own process:

    python benchmarks/bench_data_prep.py [--studies 24426] [--workdir /tmp/data_prep_bench]

The consensus answers that `apo` joins are made up from the requests (as swift infer would write
them); making them is not timed. Goal on a 2-core machine: each subcommand under 60 s (report, which reads
every trace for findings: 180 s) and 1.5 GB.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

TEACHERS = ['GPT-5', 'Gemini-2.5', 'Sonnet-4', 'Grok-4', 'Qwen-VL-Max', 'GLM-4.5V', 'Moonshot']
WORDS = ('opacity consolidation effusion pleural costophrenic angle blunting atelectasis cardiomegaly silhouette '
         'mediastinum hilar vascular congestion edema interstitial markings left right lower upper lobe base apex '
         'pneumothorax lung volume loss meniscus sign air bronchogram perihilar haziness findings support diagnosis '
         'impression consistent with likely suggest mild moderate severe bilateral no evidence of acute process '
         'the and is are there a in with which these of heart size normal enlarged trachea midline').split()


def write_dataset(path: str, studies: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    traces = 0
    with open(path, 'w', encoding='utf-8') as f:
        for s in range(studies):
            subject, study = 10000000 + s // 2, 50000000 + s
            image = f'files/p{str(subject)[:2]}/p{subject}/s{study}/view1_frontal.jpg'
            question = 'What are the findings that form the basis for the diagnosis of atelectasis and effusion?'
            shared = rng.choices(WORDS, k=120)
            for teacher in TEACHERS:
                words = shared + rng.choices(WORDS, k=110)
                rng.shuffle(words)
                text = ' '.join(words)[:1500]
                f.write(json.dumps({'subject_id': subject, 'study_id': study, 'image_path': image,
                                    'question': question, 'model': teacher, 'response': text}) + '\n')
                traces += 1
    return traces


def write_answers(requests: str, results: str) -> None:
    with open(requests, encoding='utf-8') as src, open(results, 'w', encoding='utf-8') as out:
        for line in src:
            request = json.loads(line)
            answer = 'Consensus: ' + request['messages'][0]['content'][-1400:]
            out.write(json.dumps({'response': answer, 'messages': request['messages'] +
                                  [{'role': 'assistant', 'content': answer}],
                                  'images': [{'bytes': None, 'path': p} for p in request['images']]}) + '\n')


def run(args):
    """Wall time and peak RSS of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, '-m', 'data_prep', *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f'data_prep {args[0]} failed:\n{out}')
    return wall, usage.ru_maxrss / 1024, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--studies', type=int, default=24426)
    parser.add_argument('--workdir', default='/tmp/data_prep_bench')
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    data = os.path.join(args.workdir, 'cxr_max_synthetic.jsonl')
    traces = write_dataset(data, args.studies)
    print(f'{args.studies} studies, {traces} traces, {os.path.getsize(data) / 2**20:.0f} MiB: {data}')
    at = lambda name: os.path.join(args.workdir, name)  # noqa: E731
    common = ['--dataset', data, '--image-root', '/data/mimic-cxr-jpg']
    rows = []
    for name, extra, count in [
            ('sft', ['--out', at('sft.jsonl')], traces),
            ('consensus', ['--out', at('requests.jsonl')], traces),
            ('apo', ['--out', at('apo.jsonl'), '--consensus', at('consensus.jsonl'), '--requests',
                     at('requests.jsonl')], traces),
            ('report', ['--out', at('drift')], traces)]:
        if name == 'apo':
            write_answers(at('requests.jsonl'), at('consensus.jsonl'))
        wall, rss, _ = run([name, *common, *extra])
        rows.append((name, count, wall, rss))
    print('\n| subcommand | traces in | wall s | traces/s | peak RSS MiB |\n|---|---|---|---|---|')
    for name, count, wall, rss in rows:
        print(f'| {name} | {count} | {wall:.1f} | {count / wall:,.0f} | {rss:.0f} |')
    slow = [name for name, _, wall, rss in rows if wall > (180 if name == 'report' else 60) or rss > 1536]
    print('\ngoal (each < 60 s, report < 180 s; < 1.5 GiB):', 'met' if not slow else f'missed by {slow}')


if __name__ == '__main__':
    main()

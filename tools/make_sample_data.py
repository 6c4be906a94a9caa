"""Write sample_data/: a few studies in CXR-MAX's per-trace shape with small synthetic images.

The texts imitate the dataset's teachers (agreeing and disagreeing findings, a refusal, an empty
trace, non-ASCII text); the images are 64x64 grey gradients at MIMIC-CXR-JPG style paths, so the
subject and study ids can be read from the path. Re-running rewrites the same bytes.
"""
import json
import os
import sys

from PIL import Image

TEACHERS = ['GPT-5', 'Gemini-2.5', 'Sonnet-4', 'Grok-4', 'Qwen-VL-Max', 'GLM-4.5V', 'Moonshot']
STUDIES = [  # subject, study, diagnosis, labels
    ('10000032', '50414267', 'atelectasis and pleural effusion', ['Atelectasis', 'Pleural Effusion']),
    ('10000032', '53189527', 'cardiomegaly', ['Cardiomegaly']),
    ('10000764', '57375967', 'pneumonia', ['Pneumonia', 'Consolidation']),
    ('10000898', '50771383', 'pulmonary edema', ['Edema', 'Cardiomegaly']),
    ('10000935', '51178377', 'pneumothorax', ['Pneumothorax']),
    ('10001038', '58224561', 'lung opacity', ['Lung Opacity']),
]
FINDINGS = {
    'atelectasis and pleural effusion': ('blunting of the left costophrenic angle with a meniscus sign',
                                         'linear opacity at the left base with volume loss'),
    'cardiomegaly': ('cardiothoracic ratio above 0.5', 'enlarged cardiac silhouette on the frontal view'),
    'pneumonia': ('focal airspace consolidation in the right lower lobe', 'air bronchograms within the opacity'),
    'pulmonary edema': ('bilateral perihilar haziness', 'Kerley B lines and peribronchial cuffing'),
    'pneumothorax': ('a visible visceral pleural line at the right apex', 'absent lung markings peripheral to it'),
    'lung opacity': ('an ill-defined opacity in the left mid zone', 'no associated volume loss'),
}
STYLES = [
    'Findings: {a}. In addition, {b}. These findings support the diagnosis of {d}. Impression: {d}.',
    'The basis for the diagnosis of {d} is {a}; {b} is also seen. Overall the image is consistent with {d}.',
    'Step 1: inspect the lungs — {a}. Step 2: assess the mediastinum and pleura — {b}. Conclusion: {d} is likely.',
    '{A}. The pattern, together with {b}, is typical of {d}. No other acute abnormality.',
    'Radiographic evidence: {a} and {b}. Differential includes infection, but {d} is the best explanation.',
    'Key findings — {a}; {b}. Diagnosis: {d} (confidence moderate). Größe und Form des Herzens beurteilt.',
    'There is {a}. However, {b} is subtle. I favour {d}, though a lateral view would help.',
]


def trace(teacher_index: int, study_index: int, diagnosis: str) -> str:
    if (teacher_index, study_index) == (2, 1):
        return "I'm sorry, but I can't provide a medical diagnosis from this image. Please consult a radiologist."
    if (teacher_index, study_index) == (6, 4):
        return ''
    a, b = FINDINGS[diagnosis]
    if teacher_index == 4 and study_index % 2:  # a drifting teacher: contradicts the others
        a, b = 'no focal consolidation, effusion or pneumothorax', 'a normal cardiac silhouette'
    return STYLES[teacher_index].format(a=a, b=b, d=diagnosis, A=a[0].upper() + a[1:])


def main(out: str) -> None:
    rows = []
    for s, (subject, study, diagnosis, labels) in enumerate(STUDIES):
        image = f'files/p{subject[:2]}/p{subject}/s{study}/view1_frontal.jpg'
        path = os.path.join(out, image)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels = bytes((x * 4 + y + s * 20) % 256 for y in range(64) for x in range(64))
        Image.frombytes('L', (64, 64), pixels).save(path, quality=90)
        question = (f'Based on the chest X-ray, what are the findings that form the basis for the diagnosis of '
                    f'{diagnosis}?')
        for t, teacher in enumerate(TEACHERS):
            rows.append({'subject_id': int(subject), 'study_id': int(study), 'image_path': image,
                         'question': question, 'model': teacher, 'response': trace(t, s, diagnosis),
                         'labels': labels})
    with open(os.path.join(out, 'cxr_max_sample.jsonl'), 'w', encoding='utf-8') as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + '\n')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', 'sample_data'))

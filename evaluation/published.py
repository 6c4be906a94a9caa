"""The paper's published Table 1 (arXiv 2510.04142: MS-CXR-T, top-1 accuracy), for side-by-side tables.
These are the paper's figures, not computed here; tables mark them as published."""
from typing import Dict

SOURCE = 'arXiv 2510.04142, Table 1 (MS-CXR-T, top-1 accuracy)'
OBSERVATIONS = ('Consolidation', 'Pleural effusion', 'Pneumonia', 'Pneumothorax', 'Edema')

_ROWS = [
    ('GPT-5', 0.75, 0.68, 0.89, 0.90, 0.52, 0.75),
    ('Gemini-2.5', 0.28, 0.61, 0.40, 0.94, 0.42, 0.53),
    ('Sonnet-4', 0.89, 0.69, 0.48, 0.15, 0.15, 0.47),
    ('Qwen-VL-Max', 0.54, 0.65, 0.40, 0.95, 0.64, 0.64),
    ('Grok-4', 0.43, 0.41, 0.36, 0.97, 0.61, 0.56),
    ('GLM-4.5V', 0.59, 0.67, 0.52, 0.96, 0.72, 0.69),
    ('Moonshot', 0.13, 0.46, 0.77, 0.88, 0.19, 0.48),
    ('APO student (7B)', 0.84, 0.67, 0.78, 0.96, 0.65, 0.78),
]

PUBLISHED: Dict[str, Dict[str, float]] = {
    name: {**dict(zip(OBSERVATIONS, values[:5])), 'Avg': values[5]} for name, *values in _ROWS}

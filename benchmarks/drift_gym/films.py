"""Procedurally drawn frontal chest films with known findings, small enough for a tiny vision tower.

A film is a grey image: a body, two dark lung fields, a mediastinum and a heart shadow above the diaphragm, with
jitter in position, size, contrast and noise. Each finding is drawn so that it shows at the scale of one merged
Qwen2.5-VL token (28 x 28 pixels):

* Consolidation: a bright blob in one lung zone (upper, mid or lower; right or left).
* Pleural Effusion: the base of one lung filled to a level, higher at the chest wall (a meniscus).
* Pneumothorax: a thin bright pleural line below one apex, with the field beyond it black (no lung markings).
* Cardiomegaly: a heart shadow wider than half the chest (normal: 36-46% of it).
* Support Devices: a bright tube down the midline (endotracheal tube) or a line from a shoulder (catheter).

Sides are the patient's, as radiologists write them: the patient's right is the image's left.
"""
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

ZONES = ('upper', 'mid', 'lower')
SIDES = ('right', 'left')
DEVICES = ('endotracheal tube', 'central venous catheter')
SIZES = ('small', 'moderate', 'large')


@dataclass(frozen=True)
class Finding:
    """One drawn finding and the details a report would give (side, zone, size, device kind)."""
    side: Optional[str] = None
    zone: Optional[str] = None
    size: Optional[str] = None
    device: Optional[str] = None


def draw_details(observation: str, rng: np.random.Generator) -> Finding:
    """Random details for a finding of ``observation`` (also used for findings a teacher invents)."""
    side = SIDES[rng.integers(2)]
    if observation == 'Consolidation':
        return Finding(side=side, zone=ZONES[rng.integers(3)])
    if observation == 'Pleural Effusion':
        return Finding(side=side, size=SIZES[rng.integers(3)])
    if observation == 'Pneumothorax':
        return Finding(side=side, size=SIZES[rng.integers(2)])
    if observation == 'Cardiomegaly':
        return Finding(size=SIZES[rng.integers(1, 3)])
    if observation == 'Support Devices':
        return Finding(device=DEVICES[rng.integers(2)])
    raise ValueError(f'no drawing for {observation!r}')


def _ellipse(yy, xx, cy, cx, ry, rx):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _line(img: np.ndarray, y0, x0, y1, x1, value: float, width: float) -> None:
    """A bright segment of ``width`` pixels (anti-aliased by distance)."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / length2, 0, 1)
    dist = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
    alpha = np.clip(width / 2 + 0.5 - dist, 0, 1)
    np.maximum(img, alpha * value + (1 - alpha) * img, out=img)


def draw_film(size: int, findings: Dict[str, Finding], rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` uint8 grey film showing exactly ``findings`` (observation -> details)."""
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # drawn first, so a film with one more finding is the same film otherwise
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.04, 0.04)
    noise = rng.normal(0, 0.025, (size, size)).astype(np.float32)
    finding_rng = np.random.default_rng(rng.integers(2 ** 32))
    img = np.full((size, size), 0.04, np.float32)
    scale = rng.uniform(0.93, 1.05)
    cx = s / 2 + rng.uniform(-0.03, 0.03) * s
    cy = s * 0.52 + rng.uniform(-0.03, 0.03) * s
    half_w = 0.42 * s * scale                      # half the width of the chest
    img[_ellipse(yy, xx, cy, cx, 0.5 * s * scale, half_w * 1.05)] = 0.38
    lung_ry, lung_rx = 0.30 * s * scale, 0.17 * s * scale
    lung_cy = cy - 0.04 * s
    lungs = {}
    for side, sign in (('right', -1), ('left', 1)):  # the patient's right is the image's left
        lcx = cx + sign * 0.21 * s * scale
        mask = _ellipse(yy, xx, lung_cy, lcx, lung_ry, lung_rx) & (yy < lung_cy + 0.8 * lung_ry)
        lungs[side] = (mask, lcx)
        img[mask] = 0.18
    # lung markings: faint vessels fanning out from each hilum
    markings = 0.07 * np.sin(xx * rng.uniform(0.7, 1.1) + yy * rng.uniform(0.3, 0.6)) ** 8
    for mask, _ in lungs.values():
        img[mask] += markings[mask]
    img[(np.abs(xx - cx) < 0.06 * s) & (yy < cy)] = 0.5          # mediastinum
    ratio = rng.uniform(0.56, 0.66) if 'Cardiomegaly' in findings else rng.uniform(0.36, 0.46)
    rng = finding_rng
    heart_rx = ratio * half_w
    heart = _ellipse(yy, xx, cy + 0.14 * s, cx + 0.04 * s, 0.15 * s * scale, heart_rx)
    img[heart] = np.maximum(img[heart], 0.58)

    for observation, f in findings.items():
        if observation == 'Cardiomegaly':
            continue
        if observation == 'Support Devices':
            if f.device == 'endotracheal tube':
                _line(img, 0.0, cx, cy - 0.12 * s, cx + rng.uniform(-1, 1), 1.0, 3.0)
            else:
                x0 = cx + rng.choice([-1, 1]) * 0.38 * s
                _line(img, 0.12 * s, x0, cy - 0.05 * s, cx + 0.02 * s, 1.0, 2.5)
            continue
        mask, lcx = lungs[f.side]
        top, bottom = lung_cy - lung_ry, lung_cy + 0.8 * lung_ry
        outer = -1 if f.side == 'right' else 1                       # towards the chest wall
        if observation == 'Consolidation':
            zy = top + (bottom - top) * {'upper': 0.25, 'mid': 0.5, 'lower': 0.75}[f.zone]
            sigma = rng.uniform(0.08, 0.1) * s
            blob = 0.6 * np.exp(-((yy - zy) ** 2 + (xx - lcx - rng.uniform(-0.03, 0.03) * s) ** 2) / (2 * sigma ** 2))
            img[mask] += blob[mask]
        elif observation == 'Pleural Effusion':
            height = {'small': 0.3, 'moderate': 0.4, 'large': 0.5}[f.size] * (bottom - top)
            level = bottom - height - 0.08 * s * (outer * (xx - lcx) / lung_rx).clip(0, None)   # meniscus
            fluid = mask & (yy > level)
            img[fluid] = 0.6
        elif observation == 'Pneumothorax':
            depth = {'small': 0.35, 'moderate': 0.55}[f.size] * (bottom - top)
            edge_x = lcx - outer * 0.2 * lung_rx
            beyond = mask & (yy < top + depth) & ((xx - edge_x) * outer > 0)
            img[beyond] = 0.0
            _line(img, top + 0.05 * s, edge_x, top + depth, edge_x + outer * 0.05 * s, 0.95, 2.0)
    img = (img - 0.3) * contrast + 0.3 + brightness + noise
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)

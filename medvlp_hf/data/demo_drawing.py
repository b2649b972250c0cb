"""Draws the synthetic chest radiographs of the demo set with numpy (no files, a few ms per image).

Sides follow the radiological convention: the patient's right is on the image's left. Every finding
is drawn big enough to be seen at 64 pixels: an enlarged heart is ~1.7x as wide as a normal one, an
effusion fills the lung base under a meniscus, a pneumothorax is a black lateral band behind a thin
pleural line, a nodule is a bright disc, a support device is a bright tube down the trachea.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDES = ("left", "right")


@dataclass(frozen=True)
class DemoFindings:
    """What one synthetic image shows; sides are 'left'/'right' (patient) or None when absent."""

    cardiomegaly: bool = False
    effusion: str | None = None
    pneumothorax: str | None = None
    nodule: str | None = None
    support_device: bool = False

    @property
    def pathologies(self) -> list[str]:
        """Findings other than the support device, in a fixed order."""
        present = [
            ("cardiomegaly", self.cardiomegaly), ("pleural effusion", self.effusion),
            ("pneumothorax", self.pneumothorax), ("nodule", self.nodule),
        ]
        return [name for name, value in present if value]


def _lung_center_x(side: str) -> float:
    """Image column of a lung's centre: the patient's right lung is on the image's left."""
    return 0.30 if side == "right" else 0.70


def draw_chest_xray(findings: DemoFindings, size: int, rng: np.random.Generator) -> np.ndarray:
    """A `size` x `size` uint8 radiograph-like image showing `findings` (with random pose and noise)."""
    shift_y, shift_x = rng.uniform(-0.03, 0.03, size=2)
    scale = rng.uniform(0.95, 1.05)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy = (axis[:, None] - 0.5 - shift_y) / scale + 0.5
    xx = (axis[None, :] - 0.5 - shift_x) / scale + 0.5
    image = np.full((size, size), 0.05, dtype=np.float32)

    def ellipse(cy, cx, ry, rx):
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0

    image[ellipse(0.55, 0.5, 0.50, 0.46)] = 0.42
    ribs = 0.05 * (np.sin(yy * 2 * np.pi * 9.0) > 0.6)
    lungs = {}
    for side in SIDES:
        lungs[side] = ellipse(0.47, _lung_center_x(side), 0.30, 0.155)
        image = np.where(lungs[side], 0.14 + ribs, image)
    if findings.effusion:
        lateral = np.abs(xx - 0.5)
        surface = rng.uniform(0.50, 0.60) - 0.10 * (lateral - 0.15) / 0.3
        image[lungs[findings.effusion] & (yy > surface)] = 0.62
    if findings.pneumothorax:
        direction = -1.0 if findings.pneumothorax == "right" else 1.0
        lateral = (xx - _lung_center_x(findings.pneumothorax)) * direction / 0.155
        edge = rng.uniform(0.10, 0.30)
        upper_lung = lungs[findings.pneumothorax] & (yy < 0.70)
        image[upper_lung & (lateral > edge)] = 0.0
        image[upper_lung & (np.abs(lateral - edge) < 0.06)] = 0.5
    image[(np.abs(xx - 0.5) < 0.045) & (yy > 0.08) & (yy < 0.95)] = 0.62
    heart_half_width = rng.uniform(0.18, 0.21) if findings.cardiomegaly else rng.uniform(0.10, 0.125)
    image[ellipse(0.67, 0.55, 0.13, heart_half_width)] = 0.68
    if findings.nodule:
        cy, cx = rng.uniform(0.28, 0.50), _lung_center_x(findings.nodule) + rng.uniform(-0.05, 0.05)
        radius = rng.uniform(0.045, 0.06)
        image[ellipse(cy, cx, radius, radius)] = 0.8
    if findings.support_device:
        image[(np.abs(xx - 0.515) < 0.012) & (yy < 0.42)] = 0.95
    image = image * rng.uniform(0.9, 1.1) + rng.uniform(-0.04, 0.04)
    image += rng.normal(0.0, 0.025, size=image.shape).astype(np.float32)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)

"""Per-camera scenery for the synthetic data set: backgrounds, lighting and colour casts, occluding objects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TypeVar

import cv2
import numpy as np

from reid.data.synthetic.figure import Placement, draw_figure, sample_pose
from reid.data.synthetic.identities import sample_identity

#: Background styles, one per camera in this order; cameras beyond these reuse them with other colours.
BACKGROUND_KINDS = ("bricks", "panels", "foliage", "gradient", "tiles", "shopfront")
#: Viewing-angle habits per background (e.g. a corridor camera sees fronts and backs, a crossing sees sides).
_VIEW_HABITS = (
    {"front": 1.0, "back": 1.0, "left": 0.5, "right": 0.5},
    {"front": 0.5, "back": 0.5, "left": 1.0, "right": 1.0},
    {"front": 1.0, "back": 0.6, "left": 0.8, "right": 0.8},
    {"front": 0.7, "back": 1.0, "left": 0.7, "right": 0.7},
    {"front": 0.8, "back": 0.8, "left": 1.0, "right": 0.6},
    {"front": 1.0, "back": 1.0, "left": 1.0, "right": 1.0},
)
_BASE_STYLES = (
    # wall top, wall bottom, floor, channel gains (r, g, b), brightness, contrast
    ((150, 80, 60), (120, 65, 50), (120, 120, 118), (1.12, 1.0, 0.86), 1.0, 1.0),
    ((170, 190, 200), (120, 135, 150), (60, 62, 66), (0.9, 0.98, 1.12), 0.95, 1.05),
    ((170, 200, 220), (60, 110, 55), (150, 140, 125), (0.96, 1.08, 0.93), 1.05, 0.95),
    ((90, 80, 120), (170, 140, 130), (185, 170, 140), (1.0, 0.95, 1.02), 0.85, 1.0),
    ((215, 215, 205), (195, 195, 185), (150, 150, 160), (1.0, 1.0, 1.0), 1.12, 0.9),
    ((60, 60, 70), (200, 160, 90), (100, 95, 90), (1.08, 0.95, 1.05), 0.95, 1.1),
)

_T = TypeVar("_T")


def _triple(values: Iterable[_T]) -> tuple[_T, _T, _T]:
    """The three items of ``values`` (an RGB colour or the r, g, b gains) as a fixed-length tuple."""
    first, second, third = values
    return first, second, third


@dataclass(frozen=True)
class CameraStyle:
    """How one camera renders: its background, lighting and preferred viewing angles.

    Attributes:
        index: 1-based camera number (as in ``c1``).
        kind: one of :data:`BACKGROUND_KINDS`.
        wall_top, wall_bottom, floor: RGB colours of the backdrop.
        gains: per-channel colour cast (r, g, b multipliers).
        brightness, contrast: global illumination.
        noise: sensor noise standard deviation (0-255 scale).
        blur: Gaussian blur sigma in output pixels (0 = sharp).
        view_weights: relative frequency of front / back / left / right views.
    """

    index: int
    kind: str
    wall_top: tuple[int, int, int]
    wall_bottom: tuple[int, int, int]
    floor: tuple[int, int, int]
    gains: tuple[float, float, float]
    brightness: float
    contrast: float
    noise: float
    blur: float
    view_weights: dict

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def make_camera_styles(num_cameras: int, rng: np.random.Generator, cast_strength: float = 1.0) -> list[CameraStyle]:
    """Distinct styles for cameras 1..num_cameras.

    Args:
        num_cameras: how many cameras.
        rng: random source (colours are perturbed a little per seed).
        cast_strength: scales each camera's colour cast and brightness away from neutral
            (0 = no cast, 1 = the default moderate casts of about +-12%).
    """
    styles = []
    for i in range(num_cameras):
        base = _BASE_STYLES[i % len(_BASE_STYLES)]
        wall_top, wall_bottom, floor, gains, brightness, contrast = base
        if i >= len(_BASE_STYLES):
            # extra cameras reuse a background kind with new colours and cast
            wall_top, wall_bottom, floor = (_triple(int(v) for v in rng.integers(40, 220, 3)) for _ in range(3))
            gains = _triple(float(g) for g in rng.uniform(0.88, 1.12, 3))
            brightness = float(rng.uniform(0.88, 1.1))
        jitter = lambda c: _triple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in c)  # noqa: E731
        gains = _triple(
            round(1.0 + (float(g) * float(rng.uniform(0.98, 1.02)) - 1.0) * cast_strength, 4) for g in gains
        )
        styles.append(
            CameraStyle(
                index=i + 1,
                kind=BACKGROUND_KINDS[i % len(BACKGROUND_KINDS)],
                wall_top=jitter(wall_top),
                wall_bottom=jitter(wall_bottom),
                floor=jitter(floor),
                gains=gains,
                brightness=round(1.0 + (brightness - 1.0) * cast_strength, 4),
                contrast=contrast,
                noise=round(float(rng.uniform(2.0, 5.0)), 3),
                blur=round(float(rng.choice([0.0, 0.0, 0.45, 0.6])), 3),
                view_weights=dict(_VIEW_HABITS[i % len(_VIEW_HABITS)]),
            )
        )
    return styles


def _vertical_gradient(h: int, w: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.broadcast_to(img, (h, w, 3)).copy()


def render_backdrop(
    style: CameraStyle, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The camera's wall and floor textures, each ``height`` x ``width`` RGB float32, to crop windows from."""
    h, w = height, width
    wall = _vertical_gradient(h, w, style.wall_top, style.wall_bottom)
    yy, xx = np.mgrid[0:h, 0:w]
    unit = max(h // 24, 3)
    if style.kind == "bricks":
        row = yy // unit
        offset = (row % 2) * unit
        mortar = (yy % unit < max(unit // 6, 1)) | (((xx + offset) % (2 * unit)) < max(unit // 6, 1))
        wall[mortar] = wall[mortar] * 0.55 + 110
        wall *= rng.uniform(0.9, 1.1, size=(h // unit + 1, w // (2 * unit) + 2))[row, (xx + offset) // (2 * unit)][
            ..., None
        ]
    elif style.kind == "panels":
        panel = (xx // (3 * unit)) % 2
        wall *= (0.85 + 0.2 * panel)[..., None]
        wall[(xx % (3 * unit)) < max(unit // 4, 1)] *= 0.5
    elif style.kind == "foliage":
        blobs: np.ndarray = np.zeros((h, w), np.float32)
        for _ in range(int(h * w / (unit * unit) * 0.6)):
            cv2.circle(
                blobs,
                (int(rng.integers(w)), int(rng.integers(h // 3, h))),
                int(rng.integers(unit, 2 * unit)),
                float(rng.uniform(0.3, 1.0)),
                -1,
            )
        blobs = cv2.GaussianBlur(blobs, (0, 0), unit / 2)
        wall = wall * (1 - 0.45 * blobs[..., None]) + 0.45 * blobs[..., None] * np.array([40, 95, 35], np.float32)
    elif style.kind == "gradient":
        wall += rng.normal(0, 6, size=(h // unit + 1, w // unit + 1)).astype(np.float32)[yy // unit, xx // unit][
            ..., None
        ]
    elif style.kind == "tiles":
        grout = ((yy % (2 * unit)) < 2) | ((xx % (2 * unit)) < 2)
        wall[grout] *= 0.7
    elif style.kind == "shopfront":
        band = (yy // (2 * unit)) % 3
        colours = np.array([[1.0, 1.0, 1.0], [1.25, 1.1, 0.8], [0.75, 0.8, 0.95]], np.float32)
        wall *= colours[band]
        wall[(xx % (5 * unit)) < max(unit // 3, 1)] *= 0.6
    else:
        raise ValueError(f"unknown background kind {style.kind!r}")

    floor = np.broadcast_to(np.array(style.floor, np.float32), (h, w, 3)).copy()
    floor *= np.linspace(0.9, 1.1, h, dtype=np.float32)[:, None, None]
    if style.index % 2 == 0:
        floor[((yy // (2 * unit) + xx // (3 * unit)) % 2) == 1] *= 0.85  # paving slabs
    else:
        floor[(xx % (4 * unit)) < 2] *= 0.75  # joints between slabs
    floor += rng.normal(0, 5, size=(h, w, 1)).astype(np.float32)
    return np.clip(wall, 0, 255), np.clip(floor, 0, 255)


def compose_background(
    wall: np.ndarray, floor: np.ndarray, height: int, width: int, floor_y: float, rng: np.random.Generator
) -> np.ndarray:
    """Crop a random window of the camera's textures and join wall and floor at row ``floor_y`` (uint8)."""
    y = int(rng.integers(0, wall.shape[0] - height + 1))
    x = int(rng.integers(0, wall.shape[1] - width + 1))
    out = wall[y : y + height, x : x + width].copy()
    cut = int(np.clip(round(floor_y), 0, height))
    if cut < height:
        fx = int(rng.integers(0, floor.shape[1] - width + 1))
        out[cut:] = floor[: height - cut, fx : fx + width]
        out[max(cut - 1, 0) : cut + 1] *= 0.7  # kerb line
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_clutter(canvas: np.ndarray, count: int, rng: np.random.Generator) -> None:
    """Paint ``count`` background objects in clothing colours (posters, bags, signs, coats on a rack), in place.

    Drawn before the person, so they are behind them. Their colours come from the clothes'
    palette, which is what tells identities apart: a model that looks at the whole box and
    not at the person picks up the same cues from the background.
    """
    from reid.data.synthetic.identities import CLOTHES

    h, w = canvas.shape[:2]
    names = sorted(CLOTHES)
    for _ in range(count):
        colour = tuple(int(c) for c in CLOTHES[names[int(rng.integers(len(names)))]])
        bw, bh = int(w * rng.uniform(0.12, 0.35)), int(h * rng.uniform(0.06, 0.25))
        x, y = int(rng.uniform(-0.1, 1.0) * w), int(rng.uniform(0.0, 1.0) * h)
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x, y), (x + bw, y + bh), colour, -1)
        else:
            cv2.ellipse(canvas, (x, y), (max(bw // 2, 1), max(bh // 2, 1)), 0.0, 0.0, 360.0, colour, -1)


OCCLUDER_KINDS = ("pole", "box", "passer_by")


def draw_occluder(
    canvas: np.ndarray, body_box: tuple[float, float, float, float], rng: np.random.Generator, kind: str | None = None
) -> tuple[str, np.ndarray]:
    """Paint an object that hides part of the person and return (kind, mask of the hidden pixels).

    Args:
        canvas: RGB uint8 image, painted in place.
        body_box: the person's (x0, y0, x1, y1) in canvas pixels, used to place the object over the body.
        rng: random source.
        kind: one of :data:`OCCLUDER_KINDS` (drawn at random when None).
    """
    h, w = canvas.shape[:2]
    kind = kind or str(rng.choice(OCCLUDER_KINDS))
    x0, y0, x1, y1 = body_box
    bw, bh = x1 - x0, y1 - y0
    mask = np.zeros((h, w), np.uint8)
    if kind == "pole":
        pole_w = max(2, int(bw * rng.uniform(0.14, 0.24)))
        cx = int(rng.uniform(x0 + 0.1 * bw, x1 - 0.1 * bw))
        colour = tuple(int(c) for c in rng.integers(60, 200) + rng.integers(-15, 16, 3))
        cv2.rectangle(mask, (cx - pole_w // 2, 0), (cx + pole_w // 2, h), 1, -1)
        canvas[mask > 0] = colour
        # a highlight down the pole makes it read as a cylinder
        hl = slice(max(cx - pole_w // 4, 0), max(cx - pole_w // 4 + max(pole_w // 5, 1), 1))
        canvas[:, hl] = np.clip(canvas[:, hl].astype(np.int16) + 50, 0, 255).astype(np.uint8)
    elif kind == "box":
        top = int(y0 + bh * rng.uniform(0.6, 0.78))
        left = int(rng.uniform(x0 - 0.3 * bw, x0 + 0.3 * bw))
        right = int(left + bw * rng.uniform(0.6, 1.0))
        colour = tuple(int(c) for c in rng.integers(40, 220, 3))
        cv2.rectangle(mask, (left, top), (right, h), 1, -1)
        canvas[mask > 0] = colour
        cv2.line(canvas, (left, top), (right, top), tuple(int(c * 0.6) for c in colour), max(1, h // 100))
    elif kind == "passer_by":
        # another pedestrian, nearer the camera, walking past one side of the box
        layer = canvas.copy()
        side = 1.0 if rng.random() < 0.5 else -1.0
        scale = bh * rng.uniform(1.05, 1.3)
        centre_x = (x1 if side > 0 else x0) + side * bw * rng.uniform(0.05, 0.35)
        placement = Placement(scale=scale, centre_x=centre_x, top_y=y0 + bh * rng.uniform(-0.1, 0.15))
        draw_figure(layer, sample_identity(rng), sample_pose(rng), placement)
        mask = (np.abs(layer.astype(np.int16) - canvas.astype(np.int16)).sum(axis=2) > 0).astype(np.uint8)
        canvas[:] = layer
    else:
        raise ValueError(f"unknown occluder kind {kind!r}; expected one of {OCCLUDER_KINDS}")
    return kind, mask


def apply_camera(
    image: np.ndarray, style: CameraStyle, rng: np.random.Generator, brightness_jitter: float = 0.06
) -> np.ndarray:
    """Colour cast, illumination, blur and sensor noise of the camera, on a uint8 RGB image."""
    img: np.ndarray = image.astype(np.float32) / 255.0
    gain = (
        np.array(style.gains, np.float32)
        * style.brightness
        * float(rng.uniform(1 - brightness_jitter, 1 + brightness_jitter))
    )
    img = img * gain
    img = (img - 0.5) * style.contrast + 0.5
    if style.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), style.blur)
    img = img * 255.0 + rng.normal(0.0, style.noise, size=img.shape[:2] + (1,)).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)

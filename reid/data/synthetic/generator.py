"""Plan, render and write the synthetic pedestrian data set in the Market-1501 layout, cached by its parameters.

Over 400 lines on purpose: planning, rendering, truth and writing are versioned together (the
cache key covers all of them), so one module holds what a generator version is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from reid.data.synthetic.figure import FACE_JOINTS, JOINT_NAMES, DrawnFigure, Placement, Pose, draw_figure, sample_pose
from reid.data.synthetic.identities import IdentitySpec, make_identity_groups
from reid.data.synthetic.scene import (
    CameraStyle,
    apply_camera,
    compose_background,
    draw_clutter,
    draw_occluder,
    make_camera_styles,
    render_backdrop,
)

# truth/<split folder>/<stem>_truth.png: what the generator knows and a pose estimator would not (reid.data.truth)
from reid.data.truth import BACKGROUND as TRUTH_BACKGROUND
from reid.data.truth import HIDDEN as TRUTH_HIDDEN
from reid.data.truth import TRUTH_DIR, TRUTH_SUFFIX
from reid.data.truth import VISIBLE as TRUTH_VISIBLE

log = logging.getLogger(__name__)

#: Bump when the rendering or what is written changes, so that cached folders of older code are not reused.
#: 3: the truth masks (:data:`TRUTH_DIR`) are written beside the images (the images are unchanged).
GENERATOR_VERSION = 3
#: File written last inside a finished data set folder.
COMPLETE_MARKER = ".complete"
TRAIN_DIR, GALLERY_DIR, QUERY_DIR = "bounding_box_train", "bounding_box_test", "query"
KEYPOINT_DIR = "keypoints"
SPLIT_DIRS = (TRAIN_DIR, GALLERY_DIR, QUERY_DIR)
#: Market-1501's file-name pattern: id (4 digits, or -1 for junk), camera, sequence, frame, box index.
MARKET_NAME_PATTERN = r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$"

DISTRACTOR_PID, JUNK_PID = 0, -1
# Nominal figure height as a share of the image height when the detector box is well aligned.
_NOMINAL_FIGURE = 0.86


@dataclass(frozen=True)
class SyntheticParams:
    """Every choice that shapes the data set; the cache folder is named by a hash of these.

    Attributes:
        num_train_ids, num_test_ids: identities per split (disjoint ids, as in Market-1501).
        num_cameras: cameras 1..num_cameras (at most 9: Market names carry one digit).
        images_per_train_id: training images per identity, spread over 2-5 of its cameras.
        images_per_test_id: gallery images per test identity, at least one in each of its cameras.
        queries_per_test_id: query images per test identity, each from a different camera.
        height, width: saved image size (Market: 128 x 64).
        seed: everything is a deterministic function of the parameters.
        num_distractors: gallery images of id ``0000`` (people who are not test identities).
        num_junk: gallery images of id ``-1`` (fragments of people, as bad detections).
        sibling_fraction: share of identities that copy another identity of their split and
            change exactly one body part.
        occlusion_prob: chance that a pole, box or passer-by hides part of the person.
        query_occlusion_prob, gallery_occlusion_prob: the same for the query and the gallery
            images alone (None: ``occlusion_prob``). 1 and 0 give the occluded test condition
            (every query occluded, no gallery image, as Occluded-Duke is built); the people,
            cameras and poses stay those of the set with the same other parameters.
        clutter: background objects in clothing colours painted behind the person (0 = none).
        misalignment: scales the detector-box errors (0 = perfectly centred boxes, 1 = default:
            scale about +-10%, shifts of a few pixels, head or feet cut off in ~7% each).
        cast_strength: scales the cameras' colour casts and brightness (0 = neutral).
        brightness_jitter: per-image illumination change on top of the camera's (+- this share).
        keypoint_jitter: standard deviation of the keypoint noise in pixels for a figure of
            Market's size (scales with the figure).
        keypoint_drop_prob: chance that a visible joint is dropped anyway (estimator misses).
        walk_prob: share of walking (vs standing) poses.
        jpeg_quality: JPEG quality of the saved images.
        supersample: the figure is painted at this multiple of the size and shrunk (anti-aliasing).
    """

    num_train_ids: int = 100
    num_test_ids: int = 100
    num_cameras: int = 6
    images_per_train_id: int = 14
    images_per_test_id: int = 12
    queries_per_test_id: int = 2
    height: int = 128
    width: int = 64
    seed: int = 0
    num_distractors: int = 60
    num_junk: int = 30
    sibling_fraction: float = 0.1
    occlusion_prob: float = 0.12
    clutter: int = 0
    misalignment: float = 1.0
    cast_strength: float = 1.0
    brightness_jitter: float = 0.06
    keypoint_jitter: float = 1.5
    keypoint_drop_prob: float = 0.03
    walk_prob: float = 0.6
    jpeg_quality: int = 90
    supersample: int = 2
    query_occlusion_prob: float | None = None
    gallery_occlusion_prob: float | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first parameter that is out of range."""
        checks = [
            (self.num_train_ids >= 1, "num_train_ids must be >= 1"),
            (self.num_test_ids >= 1, "num_test_ids must be >= 1"),
            (
                self.num_train_ids + self.num_test_ids <= 9999,
                "num_train_ids + num_test_ids must be <= 9999 (4-digit ids)",
            ),
            (2 <= self.num_cameras <= 9, "num_cameras must be in 2..9 (Market names carry one camera digit)"),
            (1 <= self.images_per_train_id <= 5000, "images_per_train_id must be in 1..5000 (6-digit frame numbers)"),
            (1 <= self.images_per_test_id <= 5000, "images_per_test_id must be in 1..5000 (6-digit frame numbers)"),
            (self.queries_per_test_id >= 1, "queries_per_test_id must be >= 1"),
            (self.height >= 32 and self.width >= 16, "height must be >= 32 and width >= 16"),
            (self.num_distractors >= 0 and self.num_junk >= 0, "num_distractors and num_junk must be >= 0"),
            (0.0 <= self.sibling_fraction < 1.0, "sibling_fraction must be in [0, 1)"),
            (0.0 <= self.occlusion_prob <= 1.0, "occlusion_prob must be in [0, 1]"),
            (all(p is None or 0.0 <= p <= 1.0 for p in (self.query_occlusion_prob, self.gallery_occlusion_prob)),
             "query_occlusion_prob and gallery_occlusion_prob must be in [0, 1] (or null)"),
            (0 <= self.clutter <= 50, "clutter must be in 0..50"),
            (0.0 <= self.keypoint_drop_prob <= 1.0, "keypoint_drop_prob must be in [0, 1]"),
            (0.0 <= self.walk_prob <= 1.0, "walk_prob must be in [0, 1]"),
            (min(self.misalignment, self.cast_strength, self.keypoint_jitter) >= 0,
             "misalignment, cast_strength and keypoint_jitter must be >= 0"),
            (0.0 <= self.brightness_jitter < 1.0, "brightness_jitter must be in [0, 1)"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in 1..100"),
            (1 <= self.supersample <= 4, "supersample must be in 1..4"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(f"synthetic data set: {message} (got {self})")

    def to_dict(self) -> dict:
        """The parameters as a plain dict (the cache key); ``clutter`` only when set, so older folders stay valid."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if values["clutter"] == 0:
            del values["clutter"]
        for name in ("query_occlusion_prob", "gallery_occlusion_prob"):
            if values[name] is None:
                del values[name]
        return values

    def for_folder(self, folder: str) -> SyntheticParams:
        """The parameters one split's images are rendered with (its own occlusion chance, if set)."""
        chance = {QUERY_DIR: self.query_occlusion_prob, GALLERY_DIR: self.gallery_occlusion_prob}.get(folder)
        return self if chance is None else replace(self, occlusion_prob=chance)

    def folder_name(self) -> str:
        """``synthetic_<10 hex digits>``, a hash of the parameters and :data:`GENERATOR_VERSION`."""
        key = json.dumps({"generator_version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return "synthetic_" + hashlib.sha256(key.encode()).hexdigest()[:10]


#: Named difficulty settings (``data.options.preset``); an option given explicitly wins over its preset.
#: ``hard`` was fixed before any model was trained on it, from what the paper says attention is for
#: (§1, §3.3): background clutter in clothing colours, frequent occlusion, part boxes that take in
#: other body parts and background (box misalignment, noisy and missed keypoints), and more
#: identities that differ in one body part only.
PRESETS: dict[str, dict[str, float | int]] = {
    "default": {},
    "hard": {
        "clutter": 6,
        "occlusion_prob": 0.4,
        "misalignment": 1.5,
        "keypoint_jitter": 4.0,
        "keypoint_drop_prob": 0.1,
        "sibling_fraction": 0.3,
    },
}


def resolve_preset(preset: str | None, options: dict) -> dict:
    """``options`` over the preset's values; options that are None take the preset's (or the generator's default)."""
    name = preset or "default"
    if name not in PRESETS:
        from reid.errors import ConfigError

        raise ConfigError([f"data.options.preset={name!r} is not a synthetic preset; choose one of {sorted(PRESETS)}"])
    given = {key: value for key, value in options.items() if value is not None}
    return {**PRESETS[name], **given}


@dataclass(frozen=True)
class ImageJob:
    """One image to render: where it goes, whom it shows, from which camera.

    Attributes:
        folder: split folder name (``bounding_box_train``, ``bounding_box_test`` or ``query``).
        stem: Market-style file name without ``.jpg``.
        pid: the id in the file name (``-1`` junk, ``0`` distractor, else 1..9999).
        camera: 1-based camera.
        identity: index into :attr:`DatasetPlan.identities`.
        kind: ``person``, ``distractor`` or ``junk`` (a fragment of a person).
    """

    folder: str
    stem: str
    pid: int
    camera: int
    identity: int
    kind: str


@dataclass
class DatasetPlan:
    """Everything decided before rendering: identities, their ids and splits, cameras, and the image list.

    Attributes:
        params: the parameters it was planned from.
        identities: all identity specs (train, test, distractor and junk people).
        pid_of: data-set id of each identity (``0`` distractors, ``-1`` junk).
        split_of: ``train``, ``test``, ``distractor`` or ``junk`` per identity.
        cameras: the camera styles.
        jobs: the images, in rendering order.
    """

    params: SyntheticParams
    identities: list[IdentitySpec]
    pid_of: list[int]
    split_of: list[str]
    cameras: list[CameraStyle]
    jobs: list[ImageJob]

    def specs_by_pid(self, split: str) -> dict[int, IdentitySpec]:
        """The identity spec of each id of ``split`` (``train`` or ``test``)."""
        return {self.pid_of[i]: s for i, s in enumerate(self.identities) if self.split_of[i] == split}


def _format_stem(pid: int, camera: int, seq: int, frame: int, box: int) -> str:
    pid_text = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{pid_text}_c{camera}s{seq}_{frame:06d}_{box:02d}"


class _Namer:
    """Hands out unique Market-style names, as consecutive frames of one tracklet per (id, camera)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def tracklet(self, pid: int, camera: int, count: int) -> list[str]:
        seq = int(self.rng.integers(1, 7))
        frame = int(self.rng.integers(0, 180000))
        names = []
        for _ in range(count):
            box = int(self.rng.integers(1, 4)) if self.rng.random() < 0.3 else 1
            stem = _format_stem(pid, camera, seq, frame, box)
            while stem in self.used:
                frame += 1
                stem = _format_stem(pid, camera, seq, frame, box)
            self.used.add(stem)
            names.append(stem)
            frame += int(self.rng.integers(5, 40))
        return names


def _spread(count: int, cameras: list[int], rng: np.random.Generator) -> dict[int, int]:
    """Split ``count`` images over ``cameras``: at least one each while they last, the rest at random."""
    per = {c: 0 for c in cameras}
    for c in cameras[:count]:
        per[c] = 1
    for c in rng.choice(cameras, size=max(count - len(cameras), 0)):
        per[int(c)] += 1
    return {c: n for c, n in per.items() if n > 0}


def plan_dataset(params: SyntheticParams) -> DatasetPlan:
    """Decide identities, ids, splits, cameras and every image's name (no rendering).

    Returns:
        The plan; :func:`generate` renders it.
    """
    params.validate()
    rng = np.random.default_rng([params.seed, 1])
    cameras = make_camera_styles(params.num_cameras, np.random.default_rng([params.seed, 2]), params.cast_strength)
    groups = make_identity_groups(
        [params.num_train_ids, params.num_test_ids, params.num_distractors, params.num_junk],
        rng,
        sibling_fraction=[params.sibling_fraction, params.sibling_fraction, 0.0, 0.0],
    )
    all_pids = rng.permutation(np.arange(1, params.num_train_ids + params.num_test_ids + 1))
    train_pids = sorted(int(p) for p in all_pids[: params.num_train_ids])
    test_pids = sorted(int(p) for p in all_pids[params.num_train_ids :])

    identities: list[IdentitySpec] = []
    pid_of: list[int] = []
    split_of: list[str] = []
    for split, specs, pids in (
        ("train", groups[0], train_pids),
        ("test", groups[1], test_pids),
        ("distractor", groups[2], [DISTRACTOR_PID] * params.num_distractors),
        ("junk", groups[3], [JUNK_PID] * params.num_junk),
    ):
        offset = len(identities)
        for spec, pid in zip(specs, pids, strict=True):
            identities.append(spec if spec.sibling_of is None else _rebase(spec, offset))
            pid_of.append(pid)
            split_of.append(split)

    namer = _Namer(np.random.default_rng([params.seed, 3]))
    cam_ids = list(range(1, params.num_cameras + 1))
    max_cams = min(params.num_cameras, 5)
    jobs: list[ImageJob] = []
    queries: list[ImageJob] = []
    for index, (pid, split) in enumerate(zip(pid_of, split_of, strict=True)):
        if split == "train":
            n_cams = int(rng.integers(2, max_cams + 1)) if params.images_per_train_id > 1 else 1
            cams = [int(c) for c in rng.choice(cam_ids, size=n_cams, replace=False)]
            for cam, n in sorted(_spread(params.images_per_train_id, cams, rng).items()):
                jobs += [ImageJob(TRAIN_DIR, stem, pid, cam, index, "person") for stem in namer.tracklet(pid, cam, n)]
        elif split == "test":
            n_cams = int(rng.integers(2, max_cams + 1))
            cams = [int(c) for c in rng.choice(cam_ids, size=n_cams, replace=False)]
            gallery_counts = _spread(params.images_per_test_id, cams, rng)
            # a query camera must leave gallery images of this id in some other camera
            allowed = [c for c in cams if any(g != c for g in gallery_counts)]
            n_queries = min(params.queries_per_test_id, len(allowed))
            query_cams = sorted(int(c) for c in rng.choice(allowed, size=n_queries, replace=False))
            for cam in sorted(set(gallery_counts) | set(query_cams)):
                names = namer.tracklet(pid, cam, gallery_counts.get(cam, 0) + (cam in query_cams))
                if cam in query_cams:
                    queries.append(ImageJob(QUERY_DIR, names.pop(len(names) // 2), pid, cam, index, "person"))
                jobs += [ImageJob(GALLERY_DIR, stem, pid, cam, index, "person") for stem in names]
    for index, split in enumerate(split_of):
        if split in ("distractor", "junk"):
            cam = int(rng.integers(1, params.num_cameras + 1))
            stem = namer.tracklet(pid_of[index], cam, 1)[0]
            jobs.append(
                ImageJob(
                    GALLERY_DIR, stem, pid_of[index], cam, index, "distractor" if split == "distractor" else "junk"
                )
            )
    jobs += queries
    return DatasetPlan(params, identities, pid_of, split_of, cameras, jobs)


def _rebase(spec: IdentitySpec, offset: int) -> IdentitySpec:
    """Shift a sibling's parent index from its group's list to the whole identity list."""
    assert spec.sibling_of is not None, "only siblings are rebased"
    return replace(spec, sibling_of=spec.sibling_of + offset)


@dataclass(frozen=True)
class RenderedImage:
    """One rendered detection box and what the generator knows about it.

    Attributes:
        image: RGB uint8, params.height x params.width.
        keypoints: 54 numbers in COCO-18 OpenPose order (x, y, confidence), in pixels of
            ``image``; dropped joints are 0, 0, 0.
        truth: uint8 labels of the same size (:func:`truth_labels`): 0 background, 1 the
            person's pixels that an occluder hides, 2 the person's visible pixels.
        occluder: the kind of occluder drawn (``pole``, ``box``, ``passer_by``...), or None.
    """

    image: np.ndarray
    keypoints: list[float]
    truth: np.ndarray
    occluder: str | None


def truth_labels(person: np.ndarray, hidden: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """The truth mask at the image's ``size`` (h, w) from canvas-resolution masks.

    A pixel of the image is the person's when at least half of the canvas pixels it averages
    (the image is shrunk by area) are; it is hidden when at least half of those person
    pixels lie under the occluder.

    Args:
        person: (H, W) bool, the pixels the figure painted.
        hidden: (H, W) bool or uint8, the pixels the occluder painted (None: no occluder).
        size: (height, width) of the image.
    """
    height, width = size

    def shrink(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)

    coverage = shrink(person)
    hidden_coverage = shrink(person & (hidden > 0)) if hidden is not None else np.zeros_like(coverage)
    labels = np.full((height, width), TRUTH_BACKGROUND, np.uint8)
    is_person = coverage >= 0.5
    labels[is_person] = TRUTH_VISIBLE
    labels[is_person & (hidden_coverage >= 0.5 * coverage)] = TRUTH_HIDDEN
    return labels


def render_image(
    spec: IdentitySpec,
    style: CameraStyle,
    backdrop: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    params: SyntheticParams,
    kind: str = "person",
    pose: Pose | None = None,
) -> tuple[np.ndarray, list[float]]:
    """The image and keypoints of :func:`render_sample` (same arguments, same draws)."""
    rendered = render_sample(spec, style, backdrop, rng, params, kind, pose)
    return rendered.image, rendered.keypoints


def render_sample(
    spec: IdentitySpec,
    style: CameraStyle,
    backdrop: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    params: SyntheticParams,
    kind: str = "person",
    pose: Pose | None = None,
    occluder: str | None = None,
) -> RenderedImage:
    """Render one detection box of a person seen by one camera, with its truth mask.

    Args:
        spec: who.
        style: which camera.
        backdrop: that camera's (wall, floor) textures from :func:`render_backdrop`.
        rng: random source for pose, box, occlusion and keypoint noise.
        params: sizes and difficulty knobs.
        kind: ``person``, ``distractor`` (a bit more misaligned) or ``junk`` (a fragment).
        pose: the body pose; drawn from the camera's viewing habits when None.

        occluder: force an occluder of this kind (:data:`reid.data.synthetic.scene.OCCLUDER_KINDS`),
            whatever ``params.occlusion_prob`` says (hand-made scenes for tests).

    Returns:
        The :class:`RenderedImage`.
    """
    ss = params.supersample
    h, w = params.height * ss, params.width * ss
    if pose is None:
        pose = sample_pose(rng, style.view_weights, params.walk_prob)

    m = params.misalignment * (1.5 if kind == "distractor" else 1.0)
    scale = _NOMINAL_FIGURE * h * float(np.clip(math.exp(rng.normal(0.0, 0.09 * m)), 0.75, 1.3))
    centre_x = w / 2 + rng.normal(0.0, 0.07 * m) * w
    top_y = (h - scale) / 2 + rng.normal(0.0, 0.03 * m) * h
    cut = rng.random()
    if cut < 0.07 * m:  # head cut off
        top_y = -scale * rng.uniform(0.04, 0.12)
    elif cut < 0.14 * m:  # feet cut off
        top_y = h - scale * (1.0 - rng.uniform(0.04, 0.12))
    if kind == "junk":
        scale *= rng.uniform(1.2, 2.0)
        centre_x = w / 2 + rng.choice([-1, 1]) * rng.uniform(0.2, 0.6) * w
        top_y = -rng.uniform(0.0, 0.7) * scale
    placement = Placement(scale=scale, centre_x=centre_x, top_y=top_y)

    floor_y = top_y + scale * rng.uniform(0.68, 0.93)
    canvas = compose_background(backdrop[0], backdrop[1], h, w, floor_y, rng)
    if params.clutter:
        draw_clutter(canvas, params.clutter, rng)
    background = canvas.copy()
    figure = draw_figure(canvas, spec, pose, placement, colour_gain=float(rng.uniform(0.94, 1.06)))
    # the figure's pixels are those it changed (draw_figure draws nothing at random, so this costs no draws)
    person = (canvas != background).any(axis=2)

    occlusion_mask, occluder_kind = None, None
    if rng.random() < params.occlusion_prob or occluder is not None:
        xs, ys = figure.joints_px[:, 0], figure.joints_px[:, 1]
        box = (xs.min() - 0.05 * scale, ys.min() - 0.1 * scale, xs.max() + 0.05 * scale, ys.max() + 0.05 * scale)
        occluder_kind, occlusion_mask = draw_occluder(canvas, box, rng, kind=occluder)

    image = cv2.resize(canvas, (params.width, params.height), interpolation=cv2.INTER_AREA) if ss > 1 else canvas
    image = apply_camera(image, style, rng, params.brightness_jitter)
    keypoints = _estimate_keypoints(figure, occlusion_mask, rng, params, scale / ss)
    truth = truth_labels(person, occlusion_mask, (params.height, params.width))
    return RenderedImage(image, keypoints, truth, occluder_kind)


def _estimate_keypoints(
    figure: DrawnFigure,
    occlusion_mask: np.ndarray | None,
    rng: np.random.Generator,
    params: SyntheticParams,
    figure_px: float,
) -> list[float]:
    """Turn the exact joints into what a pose estimator would report (noise, confidences, misses).

    Rules (the issue leaves these open): joints outside the image and face joints turned
    away from the camera are dropped; joints hidden behind a nearer body part are kept with a
    low confidence (0.3-0.5) 60% of the time and dropped otherwise; joints under an occluding
    object are dropped 70% of the time; any other joint is dropped with
    ``keypoint_drop_prob``. Visible joints get confidence 0.5-0.98 and Gaussian noise of
    ``keypoint_jitter`` pixels (for a 110-pixel figure; doubled for low-confidence joints,
    at most 4 sigma), clipped into the image.
    """
    ss = params.supersample
    height, width = params.height, params.width
    # output pixel j covers canvas pixels [ss*j, ss*j + ss), centred at ss*j + (ss - 1) / 2
    exact = (figure.joints_px - (ss - 1) / 2) / ss
    sigma = params.keypoint_jitter * figure_px / 110.0
    out: list[float] = []
    for j in range(len(JOINT_NAMES)):
        x, y = exact[j]
        cx, cy = figure.joints_px[j]
        inside = -0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5
        low = False
        drop = not inside
        if not drop and j in FACE_JOINTS and not figure.face_visible[j]:
            drop = True
        if not drop and occlusion_mask is not None:
            iy, ix = int(round(cy)), int(round(cx))
            if 0 <= iy < occlusion_mask.shape[0] and 0 <= ix < occlusion_mask.shape[1] and occlusion_mask[iy, ix]:
                drop, low = rng.random() < 0.7, True
        if not drop and j not in FACE_JOINTS and _hidden_by_body(figure, j):
            drop, low = rng.random() < 0.4, True
        if not drop and rng.random() < params.keypoint_drop_prob:
            drop = True
        if drop:
            out += [0, 0, 0]
            continue
        noise = np.clip(rng.normal(0.0, sigma * (2.0 if low else 1.0), 2), -4 * sigma - 1e-9, 4 * sigma + 1e-9)
        kx = float(np.clip(x + noise[0], 0.0, width - 1.0))
        ky = float(np.clip(y + noise[1], 0.0, height - 1.0))
        conf = rng.uniform(0.31, 0.5) if low else rng.uniform(0.5, 0.98)
        out += [round(kx, 3), round(ky, 3), round(float(conf), 4)]
    return out


def _hidden_by_body(figure: DrawnFigure, joint: int) -> bool:
    """Whether a nearer body part (torso, limb, bag) covers ``joint``."""
    point = (float(figure.joints_px[joint, 0]), float(figure.joints_px[joint, 1]))
    depth = figure.joint_depth[joint]
    for part_depth, polygon, owned in figure.occluders:
        if joint in owned or part_depth <= depth + 0.04:
            continue
        if cv2.pointPolygonTest(polygon.astype(np.float32).reshape(-1, 1, 2), point, False) >= 0:
            return True
    return False


def keypoint_json(keypoints: list[float]) -> str:
    """OpenPose 1.3 JSON with one person."""
    return json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": keypoints}]}, separators=(",", ":"))


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG; check the opencv installation")
    return buffer.tobytes()


def _encode_png(labels: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", labels)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG; check the opencv installation")
    return buffer.tobytes()


def _write_dataset(plan: DatasetPlan, out: Path) -> dict:
    """Render every job of ``plan`` into ``out`` and return the counts written to meta.json."""
    params = plan.params
    for folder in SPLIT_DIRS:
        (out / folder).mkdir(parents=True)
        (out / KEYPOINT_DIR / folder).mkdir(parents=True)
        (out / TRUTH_DIR / folder).mkdir(parents=True)
    backdrops = {
        style.index: render_backdrop(
            style,
            2 * params.height * params.supersample,
            3 * params.width * params.supersample,
            np.random.default_rng([params.seed, 4, style.index]),
        )  # fmt: skip
        for style in plan.cameras
    }
    styles = {style.index: style for style in plan.cameras}
    dropped_joints = 0
    for number, job in enumerate(plan.jobs):
        rng = np.random.default_rng([params.seed, 5, number])
        rendered = render_sample(
            plan.identities[job.identity],
            styles[job.camera],
            backdrops[job.camera],
            rng,
            params.for_folder(job.folder),
            job.kind,
        )
        dropped_joints += sum(1 for c in rendered.keypoints[2::3] if c == 0)
        (out / job.folder / f"{job.stem}.jpg").write_bytes(_encode_jpeg(rendered.image, params.jpeg_quality))
        (out / KEYPOINT_DIR / job.folder / f"{job.stem}_keypoints.json").write_text(keypoint_json(rendered.keypoints))
        (out / TRUTH_DIR / job.folder / f"{job.stem}{TRUTH_SUFFIX}").write_bytes(_encode_png(rendered.truth))
    total_joints = len(JOINT_NAMES) * len(plan.jobs)
    log.info(
        "keypoints: %d of %d joints written as 0,0,0 (outside the box, turned away, hidden or missed)",
        dropped_joints, total_joints,
    )  # fmt: skip

    def ids(folder: str, kind: str = "person") -> set[int]:
        return {j.pid for j in plan.jobs if j.folder == folder and j.kind == kind}

    def count(folder: str, kind: str | None = None) -> int:
        return sum(1 for j in plan.jobs if j.folder == folder and (kind is None or j.kind == kind))

    return {
        "train_images": count(TRAIN_DIR),
        "train_ids": len(ids(TRAIN_DIR)),
        "gallery_images": count(GALLERY_DIR),
        "gallery_ids": len(ids(GALLERY_DIR)),
        "distractor_images": count(GALLERY_DIR, "distractor"),
        "junk_images": count(GALLERY_DIR, "junk"),
        "query_images": count(QUERY_DIR),
        "query_ids": len(ids(QUERY_DIR)),
        "joints": total_joints,
        "dropped_joints": dropped_joints,
        "sibling_ids": sum(
            1
            for s, split in zip(plan.identities, plan.split_of, strict=True)
            if s.sibling_of is not None and split in ("train", "test")
        ),
    }


def _meta(plan: DatasetPlan, counts: dict) -> dict:
    identities = {}
    for spec, pid, split in zip(plan.identities, plan.pid_of, plan.split_of, strict=True):
        if split in ("train", "test"):
            entry = spec.to_dict()
            if spec.sibling_of is not None:
                entry["sibling_of"] = f"{plan.pid_of[spec.sibling_of]:04d}"
            identities[f"{pid:04d}"] = {"split": split, **entry}
    return {
        "name": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "layout": "market1501",
        "keypoints": f"{KEYPOINT_DIR}/<split folder>/<image stem>_keypoints.json (OpenPose COCO-18)",
        "truth": (
            f"{TRUTH_DIR}/<split folder>/<image stem>{TRUTH_SUFFIX}: uint8 labels at the image's size, "
            f"{TRUTH_BACKGROUND} background, {TRUTH_HIDDEN} person hidden by an occluder, "
            f"{TRUTH_VISIBLE} person visible"
        ),
        "params": plan.params.to_dict(),
        "counts": counts,
        "cameras": [style.to_dict() for style in plan.cameras],
        "identities": identities,
    }


def generate(
    root: str | Path,
    *,
    num_train_ids: int = 100,
    num_test_ids: int = 100,
    num_cameras: int = 6,
    images_per_train_id: int = 14,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    num_distractors: int = 60,
    num_junk: int = 30,
    images_per_test_id: int = 12,
    queries_per_test_id: int = 2,
    sibling_fraction: float = 0.1,
    occlusion_prob: float = 0.12,
    clutter: int = 0,
    misalignment: float = 1.0,
    cast_strength: float = 1.0,
    brightness_jitter: float = 0.06,
    keypoint_jitter: float = 1.5,
    keypoint_drop_prob: float = 0.03,
    walk_prob: float = 0.6,
    jpeg_quality: int = 90,
    supersample: int = 2,
    query_occlusion_prob: float | None = None,
    gallery_occlusion_prob: float | None = None,
) -> Path:
    """Render (or reuse the cached) data set and return the Market-1501-layout folder.

    The folder is ``<root>/synthetic_<hash of the parameters>/`` with ``bounding_box_train/``,
    ``bounding_box_test/``, ``query/`` (JPEGs named like ``0002_c1s1_000451_03.jpg``),
    ``keypoints/<split folder>/<stem>_keypoints.json`` and ``meta.json``. Output bytes are a
    deterministic function of the parameters. A finished folder (with its ``.complete``
    marker) is returned as is. A new one is written into a hidden temporary sibling and
    renamed into place, so concurrent callers (DDP ranks) and killed runs never leave a
    half-written data set; whoever renames first wins and the others use theirs.

    Market-1501's size is ``num_train_ids=751, num_test_ids=750, images_per_train_id=17,
    images_per_test_id=17, queries_per_test_id=5, num_distractors=2793, num_junk=3819``.
    See :class:`SyntheticParams` for what each keyword does.

    Args:
        root: folder that holds the cached data sets (created if missing).

    Returns:
        The data set folder.
    """
    params = SyntheticParams(
        num_train_ids=num_train_ids, num_test_ids=num_test_ids, num_cameras=num_cameras,
        images_per_train_id=images_per_train_id, images_per_test_id=images_per_test_id,
        queries_per_test_id=queries_per_test_id, height=height, width=width, seed=seed,
        num_distractors=num_distractors, num_junk=num_junk, sibling_fraction=sibling_fraction,
        occlusion_prob=occlusion_prob, clutter=clutter, misalignment=misalignment, cast_strength=cast_strength,
        brightness_jitter=brightness_jitter,
        keypoint_jitter=keypoint_jitter, keypoint_drop_prob=keypoint_drop_prob, walk_prob=walk_prob,
        jpeg_quality=jpeg_quality, supersample=supersample,
        query_occlusion_prob=query_occlusion_prob, gallery_occlusion_prob=gallery_occlusion_prob,
    )  # fmt: skip
    params.validate()
    root = Path(root)
    final = root / params.folder_name()
    if (final / COMPLETE_MARKER).is_file():
        log.info("synthetic data set found in %s", final)
        return final
    if final.exists():
        raise FileExistsError(
            f"{final} exists but has no {COMPLETE_MARKER} marker (not written by this generator, or damaged); "
            "delete it and call again"
        )
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plan = plan_dataset(params)
    tmp = root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        counts = _write_dataset(plan, tmp)
        (tmp / "meta.json").write_text(json.dumps(_meta(plan, counts), indent=1, sort_keys=True) + "\n")
        (tmp / COMPLETE_MARKER).write_text(params.folder_name() + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / COMPLETE_MARKER).is_file():
                raise
            log.info("another process finished %s first; using it", final)
            shutil.rmtree(tmp, ignore_errors=True)
            return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "synthetic data set written to %s in %.1f s: %d train / %d gallery / %d query images",
        final, time.perf_counter() - started, counts["train_images"], counts["gallery_images"], counts["query_images"],
    )  # fmt: skip
    return final

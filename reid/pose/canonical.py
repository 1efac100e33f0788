"""Canonical human poses and the fill-in of missing or low-confidence joints from the best-fitting one.

The paper keeps confident joints and estimates the others "by using the canonical poses" that
represent typical configurations seen by surveillance cameras; it says neither which poses nor
how.  Choices made here (all keyword options):

* The poses (``canonical_poses.json``, package data) are orthographic projections of one
  stick figure with standard anthropometric proportions, seen from 8 directions (every 45
  degrees of yaw) in 3 gaits (standing, walking with the right leg forward, with the left leg
  forward): 24 poses.  No camera tilt.  ``python -m reid.tools.canonical_poses`` regenerates the file.
  Coordinates are normalised by the body height: y = 0 at the top of the head, ankles at
  0.94; x in [0, 0.5] with the body axis at 0.25 (a 1:2 pedestrian frame).  Units are the
  same along x and y, so a similarity transform is meaningful.
* Each canonical pose is fitted to the confident joints by least squares with scale +
  translation (``allow_rotation=True`` adds an in-plane rotation; off by default because
  pedestrians stand upright and the extra freedom lets a few joints pull the body sideways).
  Joints are weighted equally, not by confidence.  The pose with the lowest residual wins and
  the missing joints are read from it.
* Fewer than ``min_joints`` (default 5) confident joints: no fill; callers fall back to strips.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reid.pose.readers import DEFAULT_MIN_CONF, JOINT_NAMES, NUM_JOINTS

CANONICAL_POSES_PATH = Path(__file__).with_name("canonical_poses.json")

#: Default number of confident joints needed before missing ones are filled in.
DEFAULT_MIN_JOINTS = 5


class CanonicalPoses(NamedTuple):
    """The canonical poses: `names` (P,) and `coords` (P, 18, 2) normalised coordinates."""

    names: tuple[str, ...]
    coords: np.ndarray


class CanonicalFit(NamedTuple):
    """The best canonical pose for a set of confident joints.

    Attributes:
        name: the chosen canonical pose.
        index: its index in :func:`load_canonical_poses`.
        scale: the fitted scale (pixels per body height).
        rotation: the fitted in-plane rotation in radians (0 without ``allow_rotation``).
        residual: root-mean-square distance, in pixels, between the confident joints and the fit.
        fitted: (18, 2) the whole canonical pose mapped into the image.
    """

    name: str
    index: int  # type: ignore[assignment]  # mypy: a NamedTuple field named like a tuple method (works at runtime)
    scale: float
    rotation: float
    residual: float
    fitted: np.ndarray


@lru_cache(maxsize=4)
def load_canonical_poses(path: str | Path = CANONICAL_POSES_PATH) -> CanonicalPoses:
    """Load canonical poses from a JSON file ``{"poses": {name: [[x, y] x 18]}}`` (package data by default)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: canonical pose file not found; regenerate it with python -m reid.tools.canonical_poses"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: canonical pose file is not valid JSON ({err.msg}, line {err.lineno})") from None
    poses = data.get("poses") if isinstance(data, dict) else None
    if not isinstance(poses, dict) or not poses:
        raise ValueError(f"{path}: expected a non-empty 'poses' object mapping names to 18 [x, y] pairs")
    names = tuple(poses)
    coords = np.asarray([poses[n] for n in names], dtype=np.float64)
    if coords.shape != (len(names), NUM_JOINTS, 2) or not np.isfinite(coords).all():
        raise ValueError(f"{path}: every canonical pose must be 18 finite [x, y] pairs, got array shape {coords.shape}")
    coords.setflags(write=False)
    return CanonicalPoses(names, coords)


def fit_canonical_pose(
    points: np.ndarray,
    mask: np.ndarray,
    *,
    poses: CanonicalPoses | None = None,
    allow_rotation: bool = False,
) -> CanonicalFit | None:
    """Fit every canonical pose to the joints selected by `mask` and return the best fit.

    Args:
        points: (18, 2) or (18, 3) joint coordinates in pixels (a third column is ignored).
        mask: (18,) bool, the joints to fit.
        poses: candidate poses; the packaged ones by default.
        allow_rotation: fit scale + rotation + translation instead of scale + translation.

    Returns:
        The lowest-residual fit, or None when fewer than 2 joints are selected or no pose
        fits with a positive scale.
    """
    poses = poses or load_canonical_poses()
    mask = np.asarray(mask, dtype=bool)
    if int(mask.sum()) < 2:
        return None
    target = np.asarray(points, dtype=np.float64)[:, :2]
    # Complex numbers make the 2-D similarity fit a one-line least-squares problem: k ~ a c + t.
    k = target[mask, 0] + 1j * target[mask, 1]
    c_all = poses.coords[..., 0] + 1j * poses.coords[..., 1]  # (P, 18)
    c = c_all[:, mask]
    c_mean = c.mean(axis=1, keepdims=True)
    k_mean = k.mean()
    c_centred = c - c_mean
    k_centred = k - k_mean
    spread = (np.abs(c_centred) ** 2).sum(axis=1)
    valid = spread > 1e-12
    correlation = (np.conj(c_centred) * k_centred).sum(axis=1)
    safe_spread = np.where(valid, spread, 1.0)
    if allow_rotation:
        a = correlation / safe_spread
        valid &= np.abs(a) > 0
    else:
        a = correlation.real / safe_spread + 0j
        valid &= a.real > 0
    if not valid.any():
        return None
    residuals = (np.abs(a[:, None] * c_centred - k_centred[None, :]) ** 2).sum(axis=1)
    residuals = np.where(valid, residuals, np.inf)
    best = int(np.argmin(residuals))
    fitted_complex = a[best] * (c_all[best] - c_mean[best, 0]) + k_mean
    fitted = np.stack([fitted_complex.real, fitted_complex.imag], axis=1)
    return CanonicalFit(
        name=poses.names[best],
        index=best,
        scale=float(abs(a[best])),
        rotation=float(np.angle(a[best])),
        residual=float(math.sqrt(residuals[best] / k.size)),
        fitted=fitted,
    )


def fill_missing_joints(
    keypoints: np.ndarray,
    min_conf: float = DEFAULT_MIN_CONF,
    *,
    min_joints: int = DEFAULT_MIN_JOINTS,
    poses: CanonicalPoses | None = None,
    allow_rotation: bool = False,
) -> tuple[np.ndarray, int]:
    """Replace joints with confidence <= `min_conf` by those of the best-fitting canonical pose.

    Args:
        keypoints: (18, 3) (x, y, confidence) in OpenPose order.
        min_conf: joints with confidence above this are kept as detected.
        min_joints: fewest confident joints to fit from.
        poses: candidate poses; the packaged ones by default.
        allow_rotation: see :func:`fit_canonical_pose`.

    Returns:
        ``(filled, n_filled)``: a new (18, 3) array whose low-confidence joints have canonical
        coordinates (their confidence column is left as it was, so they stay recognisable),
        and how many joints were filled.

    Raises:
        ValueError: wrong shape, or fewer than `min_joints` confident joints (or no valid fit):
            use :func:`reid.pose.image_regions`, which falls back to strips.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape != (NUM_JOINTS, 3):
        raise ValueError(f"keypoints must have shape (18, 3) (x, y, confidence), got {keypoints.shape}")
    confident = (keypoints[:, 2] > min_conf) & np.isfinite(keypoints[:, :2]).all(axis=1)
    n_confident = int(confident.sum())
    filled = keypoints.copy()
    if n_confident == NUM_JOINTS:
        return filled, 0
    if n_confident < max(min_joints, 2):
        raise ValueError(
            f"only {n_confident} joints have confidence > {min_conf}; need {min_joints} to fit a canonical pose"
        )
    fit = fit_canonical_pose(keypoints, confident, poses=poses, allow_rotation=allow_rotation)
    if fit is None:
        raise ValueError("no canonical pose fits the confident joints with a positive scale")
    filled[~confident, :2] = fit.fitted[~confident]
    return filled, NUM_JOINTS - n_confident


# --------------------------------------------------------------------------- generation


def _stick_figure(gait: str) -> np.ndarray:
    """3-D joints (x: the person's left, y: down, z: forward), body height 1, for one gait."""
    joints: dict[str, tuple[float, float, float]] = {
        "nose": (0.0, 0.09, 0.10),
        "neck": (0.0, 0.18, 0.0),
        "r_eye": (-0.03, 0.065, 0.08),
        "l_eye": (0.03, 0.065, 0.08),
        "r_ear": (-0.07, 0.075, 0.0),
        "l_ear": (0.07, 0.075, 0.0),
    }
    upper_arm, forearm, thigh, shin = 0.18, 0.15, 0.21, 0.21
    # Swing angles in degrees, forward positive: (upper arm, forearm) and (thigh, shin).
    if gait == "standing":
        arms = {"r": (0.0, 3.0), "l": (0.0, 3.0)}
        legs = {"r": (0.0, 0.0), "l": (0.0, 0.0)}
    elif gait in ("walking_r", "walking_l"):
        forward, backward = ("r", "l") if gait == "walking_r" else ("l", "r")
        legs = {forward: (22.0, 8.0), backward: (-12.0, -35.0)}
        arms = {forward: (-15.0, -10.0), backward: (18.0, 40.0)}  # arms swing against the legs
    else:
        raise ValueError(f"unknown gait {gait!r}")
    for side, sign in (("r", -1.0), ("l", 1.0)):
        shoulder = np.array([sign * 0.12, 0.19, 0.0])
        hip = np.array([sign * 0.085, 0.52, 0.0])
        a_up, a_fore = (math.radians(v) for v in arms[side])
        elbow = shoulder + upper_arm * np.array([sign * 0.08, math.cos(a_up), math.sin(a_up)])
        wrist = elbow + forearm * np.array([sign * 0.03, math.cos(a_fore), math.sin(a_fore)])
        l_up, l_low = (math.radians(v) for v in legs[side])
        knee = hip + thigh * np.array([sign * -0.02, math.cos(l_up), math.sin(l_up)])
        ankle = knee + shin * np.array([0.0, math.cos(l_low), math.sin(l_low)])
        for name, point in (
            ("shoulder", shoulder),
            ("elbow", elbow),
            ("wrist", wrist),
            ("hip", hip),
            ("knee", knee),
            ("ankle", ankle),
        ):
            joints[f"{side}_{name}"] = tuple(point)
    return np.array([joints[name] for name in JOINT_NAMES])


_VIEWS = {  # yaw in degrees: 0 faces the camera, +90 faces the image's right side
    "front": 0,
    "front_right": 45,
    "right": 90,
    "back_right": 135,
    "back": 180,
    "back_left": -135,
    "left": -90,
    "front_left": -45,
}


def generate_canonical_poses() -> dict[str, list[list[float]]]:
    """Project the stick figure for every view and gait into the normalised 1:2 frame."""
    poses: dict[str, list[list[float]]] = {}
    for gait in ("standing", "walking_r", "walking_l"):
        figure = _stick_figure(gait)
        for view, yaw_degrees in _VIEWS.items():
            yaw = math.radians(yaw_degrees)
            x = figure[:, 0] * math.cos(yaw) + figure[:, 2] * math.sin(yaw) + 0.25
            y = figure[:, 1] - figure[[10, 13], 1].max() + 0.94  # lowest ankle at 0.94
            poses[f"{view}_{gait}"] = [[round(float(a), 4), round(float(b), 4)] for a, b in zip(x, y, strict=True)]
    return poses

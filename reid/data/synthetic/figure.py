"""Articulated 3-D stick figures: poses, projection to the image, painting with clothes, and COCO-18 joints.

Over 400 lines on purpose: the pose, the projection and the painting of one figure share its
joint geometry; a change to any of them changes the generator version as a whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from reid.data.synthetic.identities import CLOTHES, HAIR, SKIN, IdentitySpec

#: OpenPose COCO-18 joint names, in file order.
JOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)  # fmt: skip
J = {name: i for i, name in enumerate(JOINT_NAMES)}
#: The limbs OpenPose draws for COCO-18 (pairs of joint indices).
SKELETON = (
    (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
FACE_JOINTS = (J["nose"], J["r_eye"], J["l_eye"], J["r_ear"], J["l_ear"])

VIEWS = ("front", "back", "left", "right")
#: Yaw of the person relative to the camera for each view (0 = facing the camera, 90 = facing image right).
VIEW_YAW_DEG = {"front": 0.0, "back": 180.0, "right": 90.0, "left": -90.0}

# Body proportions in units of the standing height (top of head y=0, soles y=1). The body
# frame is X to the person's left, Y down, Z forward (the way the person faces).
_HEAD_CENTRE = (0.0, 0.075, 0.0)
_HEAD_RX, _HEAD_RY = 0.056, 0.07
_FACE_OFFSETS = {
    "nose": (0.0, 0.088, 0.056),
    "r_eye": (-0.022, 0.068, 0.048),
    "l_eye": (0.022, 0.068, 0.048),
    "r_ear": (-0.055, 0.078, -0.004),
    "l_ear": (0.055, 0.078, -0.004),
}
# A face joint is reported when it sits this far towards the camera from the head centre: the
# nose until the head turns ~100 degrees away (profiles keep it), an eye only on the near side,
# an ear unless it is deep on the far side (estimators do find ears on the back of a head).
_FACE_VISIBLE_ABOVE = {"nose": -0.011, "r_eye": 0.006, "l_eye": 0.006, "r_ear": -0.02, "l_ear": -0.02}
_NECK_Y, _SHOULDER_Y, _SHOULDER_X = 0.165, 0.195, 0.105
_HIP_Y, _HIP_X = 0.52, 0.066
_UPPER_ARM, _FOREARM = 0.155, 0.14
_THIGH, _SHIN = 0.23, 0.225
_SOLE_BELOW_ANKLE = 0.028


@dataclass(frozen=True)
class Pose:
    """A body configuration, independent of where the person stands in the image.

    Attributes:
        yaw_deg: rotation about the vertical axis (0 faces the camera, 180 shows the back,
            +-90 a side view).
        gait: leg swing amplitude in radians (0 stands still, ~0.45 walks).
        phase: walking cycle phase in radians.
        arm_abduction: how far the arms hang away from the body (radians), per side (right, left).
        elbow_flex: extra elbow bend (radians), per side (right, left).
    """

    yaw_deg: float
    gait: float
    phase: float
    arm_abduction: tuple[float, float]
    elbow_flex: tuple[float, float]

    @property
    def view(self) -> str:
        """The nearest of ``front``, ``back``, ``left``, ``right``."""
        yaw = (self.yaw_deg + 180.0) % 360.0 - 180.0
        if abs(yaw) <= 45:
            return "front"
        if abs(yaw) >= 135:
            return "back"
        return "right" if yaw > 0 else "left"


def sample_pose(rng: np.random.Generator, view_weights: dict[str, float] | None = None, walk_prob: float = 0.6) -> Pose:
    """Draw a plausible pedestrian pose.

    Args:
        rng: random source.
        view_weights: relative frequency of each of :data:`VIEWS` (uniform when None).
        walk_prob: probability that the person is walking rather than standing.
    """
    weights = view_weights or {v: 1.0 for v in VIEWS}
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    view = names[int(rng.choice(len(names), p=p / p.sum()))]
    yaw = VIEW_YAW_DEG[view] + float(rng.uniform(-25.0, 25.0))
    walking = rng.random() < walk_prob
    gait = float(rng.uniform(0.3, 0.5)) if walking else float(rng.uniform(0.0, 0.08))
    abduction = (float(rng.uniform(0.04, 0.22)), float(rng.uniform(0.04, 0.22)))
    # mostly relaxed elbows; sometimes a forearm raised (phone, cup, hand on a strap)
    flex_r, flex_l = (
        float(rng.uniform(0.05, 0.45)) if rng.random() < 0.85 else float(rng.uniform(0.9, 1.6)) for _ in range(2)
    )
    phase = float(rng.uniform(0, 2 * math.pi))
    return Pose(yaw_deg=yaw, gait=gait, phase=phase, arm_abduction=abduction, elbow_flex=(flex_r, flex_l))


def _swing(angle: float, abduction: float = 0.0, side: float = 0.0) -> np.ndarray:
    """Unit vector pointing down, rotated forward by ``angle`` and sideways (outwards) by ``abduction``."""
    v = np.array(
        [side * math.sin(abduction), math.cos(abduction) * math.cos(angle), math.cos(abduction) * math.sin(angle)]
    )
    return v / np.linalg.norm(v)


def body_points(pose: Pose, build: float = 1.0) -> dict[str, np.ndarray]:
    """3-D joints and drawing anchors in the body frame (X left, Y down, Z forward), standing on y=1.

    Returns a dict with the 18 COCO joint names plus ``head`` (head centre), ``r_toe``, ``l_toe``.
    """
    pts: dict[str, np.ndarray] = {}
    pts["head"] = np.array(_HEAD_CENTRE)
    for name, offset in _FACE_OFFSETS.items():
        pts[name] = np.array(offset)
    pts["neck"] = np.array([0.0, _NECK_Y, 0.0])
    for side_name, side in (("r", -1.0), ("l", 1.0)):
        k = 0 if side_name == "r" else 1
        leg_phase = pose.phase + (0.0 if side_name == "r" else math.pi)
        # legs: thigh swings forward with sin(phase); the knee bends most while the leg swings forward
        thigh_angle = pose.gait * math.sin(leg_phase)
        knee_flex = 1.5 * pose.gait * max(0.0, math.cos(leg_phase)) + 0.04
        hip = np.array([side * _HIP_X * build, _HIP_Y, 0.0])
        knee = hip + _THIGH * _swing(thigh_angle, 0.02, side)
        ankle = knee + _SHIN * _swing(thigh_angle - knee_flex)
        toe = ankle + np.array([0.0, _SOLE_BELOW_ANKLE * 0.8, 0.075])
        # arms swing against the leg of the same side
        arm_angle = -0.8 * pose.gait * math.sin(leg_phase)
        shoulder = np.array([side * _SHOULDER_X * build, _SHOULDER_Y, 0.0])
        elbow = shoulder + _UPPER_ARM * _swing(arm_angle, pose.arm_abduction[k], side)
        wrist = elbow + _FOREARM * _swing(arm_angle + pose.elbow_flex[k], pose.arm_abduction[k] * 0.5, side)
        pts[f"{side_name}_hip"], pts[f"{side_name}_knee"], pts[f"{side_name}_ankle"] = hip, knee, ankle
        pts[f"{side_name}_toe"] = toe
        pts[f"{side_name}_shoulder"], pts[f"{side_name}_elbow"], pts[f"{side_name}_wrist"] = shoulder, elbow, wrist
    # stand on the floor: the lowest sole touches y = 1
    lowest = max(pts["r_ankle"][1], pts["l_ankle"][1]) + _SOLE_BELOW_ANKLE
    drop = 1.0 - lowest
    for key in pts:
        pts[key] = pts[key] + np.array([0.0, drop, 0.0])
    return pts


@dataclass
class Placement:
    """Where the figure lands in the (super-sampled) canvas: pixels per body unit and the head-top point."""

    scale: float
    centre_x: float
    top_y: float


class Projector:
    """Rotates body-frame points by the pose's yaw and projects them orthographically to canvas pixels."""

    def __init__(self, pose: Pose, placement: Placement) -> None:
        theta = math.radians(pose.yaw_deg)
        self.cos, self.sin = math.cos(theta), math.sin(theta)
        self.placement = placement

    def camera(self, p: np.ndarray) -> np.ndarray:
        """Body frame to camera frame: x right in the image, y down, z towards the viewer."""
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        return np.stack([x * self.cos + z * self.sin, y, -x * self.sin + z * self.cos], axis=-1)

    def pixels(self, p: np.ndarray) -> np.ndarray:
        """Canvas pixel coordinates (x, y) of body-frame points."""
        c = self.camera(np.asarray(p, dtype=float))
        s = self.placement
        return np.stack([s.centre_x + c[..., 0] * s.scale, s.top_y + c[..., 1] * s.scale], axis=-1)

    def depth(self, p: np.ndarray) -> float:
        """Mean distance towards the viewer of body-frame points (larger is nearer)."""
        return float(np.mean(self.camera(np.asarray(p, dtype=float))[..., 2]))


RGB = tuple[int, int, int]
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fill(canvas: np.ndarray, polygon: np.ndarray, colour: RGB) -> None:
    cv2.fillPoly(canvas, [_fixed(polygon)], colour, cv2.LINE_AA, _SHIFT)


def _circle(canvas: np.ndarray, centre: np.ndarray, radius: float, colour: RGB) -> None:
    cv2.circle(
        canvas,
        tuple(int(v) for v in np.round(centre * _ONE)),
        max(1, int(round(radius * _ONE))),
        colour,
        -1,
        cv2.LINE_AA,
        _SHIFT,
    )


def _ellipse(
    canvas: np.ndarray, centre: np.ndarray, axes: tuple[float, float], colour: RGB,
    start: float = 0.0, end: float = 360.0, angle: float = 0.0,
) -> None:  # fmt: skip
    cv2.ellipse(
        canvas,
        tuple(int(v) for v in np.round(np.asarray(centre) * _ONE)),
        tuple(max(1, int(round(a * _ONE))) for a in axes),
        angle, start, end, colour, -1, cv2.LINE_AA, _SHIFT,
    )  # fmt: skip


def limb_polygon(p: np.ndarray, q: np.ndarray, width_p: float, width_q: float) -> np.ndarray:
    """Quadrilateral of a tapered limb from ``p`` to ``q`` (pixels), widths at either end."""
    d = q - p
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
    return np.array([p + n * width_p / 2, q + n * width_q / 2, q - n * width_q / 2, p - n * width_p / 2])


def _draw_limb(
    canvas: np.ndarray, p: np.ndarray, q: np.ndarray, width_p: float, width_q: float, colour: RGB
) -> np.ndarray:
    poly = limb_polygon(p, q, width_p, width_q)
    _fill(canvas, poly, colour)
    _circle(canvas, p, width_p / 2, colour)
    _circle(canvas, q, width_q / 2, colour)
    return poly


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)  # type: ignore[return-value]


def _paint_pattern(
    canvas: np.ndarray, polygon: np.ndarray, pattern: str, colour: RGB, period: float, hem_y: float, chest_y: float
) -> None:
    """Paint the shirt pattern inside ``polygon`` (its plain colour is already there)."""
    if pattern == "plain":
        return
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 1
    h_img, w_img = canvas.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w_img), min(y1, h_img)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.fillPoly(mask, [_fixed(polygon - [x0, y0])], 1, cv2.LINE_8, _SHIFT)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    band = max(period, 2.0)
    if pattern == "stripes":
        on = ((yy - chest_y) // band) % 2 == 1
    elif pattern == "vstripes":
        on = ((xx - x0) // band) % 2 == 1
    elif pattern == "checks":
        on = (((yy - chest_y) // (band * 1.3)) % 2 == 1) ^ (((xx - x0) // (band * 1.3)) % 2 == 1)
    elif pattern == "two_tone":
        on = yy > (chest_y + hem_y) / 2
    else:
        raise ValueError(f"unknown shirt pattern {pattern!r}")
    sel = on & (mask > 0)
    canvas[y0:y1, x0:x1][sel] = colour


@dataclass
class DrawnFigure:
    """What painting a figure produced: canvas-pixel joints, their depth, and the shapes that may hide them."""

    joints_px: np.ndarray  # (18, 2) canvas pixels
    joint_depth: np.ndarray  # (18,) towards the viewer
    face_visible: np.ndarray  # (18,) bool, False for face joints turned away from the camera
    occluders: list[tuple[float, np.ndarray, frozenset[int]]]  # (depth, polygon, joints that belong to it)


def draw_figure(
    canvas: np.ndarray, spec: IdentitySpec, pose: Pose, placement: Placement, colour_gain: float = 1.0
) -> DrawnFigure:
    """Paint the person on ``canvas`` (H x W x 3 RGB uint8, modified in place).

    Body parts are painted far to near (painter's algorithm on the depth of each part after
    the yaw rotation), so side and back views hide the far limbs and the face.

    Args:
        canvas: the image to paint on.
        spec: the identity's clothes and colours.
        pose: body configuration and viewing angle.
        placement: figure scale and position in canvas pixels.
        colour_gain: brightness factor for this image's clothes (per-image lighting).
    """
    pts = body_points(pose, spec.build)
    proj = Projector(pose, placement)
    px = {k: proj.pixels(v) for k, v in pts.items()}
    s = placement.scale
    w = spec.build

    def col(rgb: RGB, f: float = 1.0) -> RGB:
        return _shade(rgb, colour_gain * f)

    skin = col(SKIN[spec.skin])
    shirt = col(CLOTHES[spec.shirt_colour])
    trouser = col(CLOTHES[spec.trouser_colour])
    shoe = col(CLOTHES[spec.shoe_colour])
    hair = col(HAIR[spec.hair_colour])

    items: list[tuple[float, int, Callable[[], None]]] = []  # (depth, tie-break order, painter)
    occluders: list[tuple[float, np.ndarray, frozenset[int]]] = []

    for side in ("r", "l"):
        hip, knee, ankle, toe = (px[f"{side}_{n}"] for n in ("hip", "knee", "ankle", "toe"))
        depth = proj.depth(np.stack([pts[f"{side}_hip"], pts[f"{side}_knee"], pts[f"{side}_ankle"]])) - 0.03
        thigh_c = trouser if spec.leg_style in ("trousers", "shorts") else skin
        shin_c = trouser if spec.leg_style == "trousers" else skin
        owned = frozenset({J[f"{side}_hip"], J[f"{side}_knee"], J[f"{side}_ankle"]})

        def paint_leg(
            hip=hip,
            knee=knee,
            ankle=ankle,
            toe=toe,
            thigh_c=thigh_c,
            shin_c=shin_c,
            shade=(0.92 if side == "l" else 1.0),
        ):
            _draw_limb(canvas, hip, knee, 0.095 * s * w, 0.068 * s * w, _shade(thigh_c, shade))
            _draw_limb(canvas, knee, ankle, 0.066 * s * w, 0.05 * s * w, _shade(shin_c, shade))
            _draw_limb(canvas, ankle, toe, 0.056 * s, 0.048 * s, _shade(shoe, shade))

        items.append((depth, 0, paint_leg))
        occluders.append((depth, limb_polygon(hip, knee, 0.095 * s * w, 0.068 * s * w), owned))
        occluders.append((depth, limb_polygon(knee, ankle, 0.066 * s * w, 0.05 * s * w), owned))

    if spec.leg_style == "skirt":
        top = [pts["r_hip"] + [-0.035 * w, -0.03, 0], pts["l_hip"] + [0.035 * w, -0.03, 0]]
        knee_y = (pts["r_knee"][1] + pts["l_knee"][1]) / 2 - 0.03
        hem = [np.array([0.16 * w, knee_y, 0.0]), np.array([-0.16 * w, knee_y, 0.0])]
        skirt_poly = _hull(
            proj, np.stack(top + hem + [p + [0, 0, 0.06] for p in top] + [p - [0, 0, 0.06] for p in top])
        )
        items.append((0.0 - 0.01, 1, lambda: _fill(canvas, skirt_poly, trouser)))

    # torso: hull of a box between shoulders and hips, deep enough to read in side views
    torso_pts = []
    for side, sgn in (("r", -1.0), ("l", 1.0)):
        for dz in (-0.065, 0.065):
            torso_pts.append(pts[f"{side}_shoulder"] + [sgn * 0.02 * w, -0.012, dz])
            torso_pts.append(pts[f"{side}_hip"] + [sgn * 0.028 * w, 0.035, dz * 0.85])
    torso_pts.append(pts["neck"] + [0, 0.005, 0])
    torso_poly = _hull(proj, np.stack(torso_pts))
    chest_y = float(proj.pixels(pts["neck"])[1])
    hem_y = float(torso_poly[:, 1].max())

    def paint_torso():
        _fill(canvas, torso_poly, shirt)
        if spec.shirt_pattern != "plain":
            _paint_pattern(
                canvas, torso_poly, spec.shirt_pattern, col(CLOTHES[spec.pattern_colour]), 0.032 * s, hem_y, chest_y
            )

    items.append((0.0, 2, paint_torso))
    occluders.append(
        (0.0, torso_poly, frozenset({J["neck"], J["r_shoulder"], J["l_shoulder"], J["r_hip"], J["l_hip"]}))
    )

    for side in ("r", "l"):
        sho, elb, wri = (px[f"{side}_{n}"] for n in ("shoulder", "elbow", "wrist"))
        depth = proj.depth(np.stack([pts[f"{side}_shoulder"], pts[f"{side}_elbow"], pts[f"{side}_wrist"]])) + 0.03
        fore_c = shirt if spec.sleeves == "long" else skin

        def paint_arm(sho=sho, elb=elb, wri=wri, fore_c=fore_c, shade=(0.92 if side == "l" else 1.0)):
            _draw_limb(canvas, sho, elb, 0.062 * s * w, 0.05 * s * w, _shade(shirt, shade))
            _draw_limb(canvas, elb, wri, 0.048 * s * w, 0.04 * s * w, _shade(fore_c, shade))
            _circle(canvas, wri + (wri - elb) * 0.18, 0.026 * s, skin)

        items.append((depth, 3, paint_arm))
        owned = frozenset({J[f"{side}_shoulder"], J[f"{side}_elbow"], J[f"{side}_wrist"]})
        occluders.append((depth, limb_polygon(sho, elb, 0.062 * s * w, 0.05 * s * w), owned))
        occluders.append((depth, limb_polygon(elb, wri, 0.048 * s * w, 0.04 * s * w), owned))

    _add_bag(items, occluders, canvas, spec, pts, proj, col)

    items.sort(key=lambda item: (item[0], item[1]))
    for _, _, paint in items:
        paint()
    _draw_head(canvas, spec, pose, pts, proj, skin, hair, col)

    joints = np.stack([pts[name] for name in JOINT_NAMES])
    joints_cam = proj.camera(joints)
    head_depth = proj.camera(pts["head"])[2]
    face_visible = np.ones(len(JOINT_NAMES), dtype=bool)
    for j in FACE_JOINTS:
        face_visible[j] = joints_cam[j, 2] - head_depth > _FACE_VISIBLE_ABOVE[JOINT_NAMES[j]]
    return DrawnFigure(
        joints_px=proj.pixels(joints), joint_depth=joints_cam[:, 2], face_visible=face_visible, occluders=occluders
    )


def _hull(proj: Projector, points3d: np.ndarray) -> np.ndarray:
    """Convex outline, in canvas pixels, of projected 3-D points."""
    hull = cv2.convexHull(proj.pixels(points3d).astype(np.float32))
    return hull.reshape(-1, 2).astype(float)


def _add_bag(
    items: list, occluders: list, canvas: np.ndarray, spec: IdentitySpec, pts: dict[str, np.ndarray],
    proj: Projector, col: Callable[[RGB], RGB],
) -> None:  # fmt: skip
    """Queue the bag (and its strap) for painting and register it as something that can hide joints."""
    if spec.bag == "none":
        return
    bag = col(CLOTHES[spec.bag_colour])
    strap = _shade(bag, 0.75)
    w = spec.build
    s = proj.placement.scale
    facing = proj.cos  # > 0 when the front of the body faces the camera
    if spec.bag == "backpack":
        centre = np.array([0.0, 0.33, -0.105])
        box = _box(centre, (0.15 * w, 0.18, 0.08))
        poly = _hull(proj, box)
        depth = proj.depth(centre[None])
        items.append((depth, 4, lambda: _fill(canvas, poly, bag)))
        if facing > 0.3:
            # straps over the shoulders on the chest
            def paint_straps():
                for sgn in (-1.0, 1.0):
                    a = proj.pixels(np.array([sgn * 0.07 * w, 0.19, 0.07]))
                    b = proj.pixels(np.array([sgn * 0.075 * w, 0.42, 0.07]))
                    _draw_limb(canvas, a, b, 0.02 * s, 0.02 * s, strap)

            items.append((0.07, 5, paint_straps))
    elif spec.bag == "shoulder":
        centre = np.array([0.15 * w, 0.53, 0.0])
        poly = _hull(proj, _box(centre, (0.05, 0.12, 0.15)))
        depth = proj.depth(centre[None]) + 0.04
        a3, b3 = np.array([-0.08 * w, 0.19, 0.07]), np.array([0.13 * w, 0.48, 0.07])
        if facing < 0:
            a3, b3 = a3 * [1, 1, -1], b3 * [1, 1, -1]

        def paint_strap(a3=a3, b3=b3):
            _draw_limb(canvas, proj.pixels(a3), proj.pixels(b3), 0.018 * s, 0.018 * s, strap)

        items.append((0.07, 5, paint_strap))
        items.append((depth, 4, lambda: _fill(canvas, poly, bag)))
    elif spec.bag == "handbag":
        centre = pts["l_wrist"] + [0.0, 0.07, 0.0]
        poly = _hull(proj, _box(centre, (0.04, 0.09, 0.13)))
        depth = proj.depth(pts["l_wrist"][None]) + 0.035
        items.append((depth, 4, lambda: _fill(canvas, poly, bag)))
    else:
        raise ValueError(f"unknown bag kind {spec.bag!r}")
    occluders.append((depth, poly, frozenset()))


def _box(centre: np.ndarray, size: tuple[float, float, float]) -> np.ndarray:
    """The 8 corners of an axis-aligned 3-D box."""
    half = np.array(size) / 2
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    return centre + corners * half


def _draw_head(
    canvas: np.ndarray, spec: IdentitySpec, pose: Pose, pts: dict[str, np.ndarray], proj: Projector,
    skin: RGB, hair: RGB, col: Callable[[RGB], RGB],
) -> None:  # fmt: skip
    """Neck, hair, face (when turned towards the camera) and hat."""
    s = proj.placement.scale
    centre = proj.pixels(pts["head"])
    neck = proj.pixels(pts["neck"])
    rx, ry = _HEAD_RX * s, _HEAD_RY * s
    fx, fz = proj.sin, proj.cos  # facing direction: image-x component, towards-viewer component
    _draw_limb(canvas, neck + [0, 0.01 * s], centre + [0, 0.02 * s], 0.05 * s, 0.05 * s, skin)
    if spec.hair_length == "long":
        _ellipse(canvas, centre + [-fx * 0.35 * rx, 0.75 * ry], (1.05 * rx, 1.25 * ry), hair)
    _ellipse(canvas, centre + [-fx * 0.12 * rx, -0.04 * ry], (1.04 * rx, 1.02 * ry), hair)
    if fz > -0.35:
        face_w = rx * (0.48 + 0.42 * max(fz, 0.0))
        _ellipse(canvas, centre + [fx * 0.42 * rx, 0.2 * ry], (face_w, 0.78 * ry), skin)
        if fz > 0.2 and s > 60:
            eye_colour = _shade(skin, 0.45)
            for ex in (-0.35, 0.35):
                _circle(canvas, centre + [fx * 0.45 * rx + ex * rx * fz, 0.05 * ry], 0.08 * rx, eye_colour)
    if spec.hat != "none":
        hat = col(CLOTHES[spec.hat])
        _ellipse(canvas, centre + [0.0, -0.12 * ry], (1.1 * rx, 0.95 * ry), hat, start=180.0, end=360.0)
        if fz > -0.3:
            brim_centre = centre + [fx * 0.85 * rx, -0.12 * ry]
            _ellipse(canvas, brim_centre, (rx * (0.55 + 0.55 * max(fz, 0.0)), 0.16 * ry), _shade(hat, 0.85))

"""Identity appearance specs for the synthetic pedestrians: per-body-part attributes and "sibling" identities."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Named RGB colours for clothes, chosen to stay apart in hue or brightness after a moderate colour cast.
CLOTHES: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (236, 236, 230),
    "gray": (128, 128, 128),
    "red": (205, 30, 35),
    "maroon": (115, 20, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 40),
    "green": (45, 165, 60),
    "dark_green": (20, 80, 40),
    "blue": (30, 80, 205),
    "navy": (22, 32, 95),
    "sky": (115, 185, 240),
    "purple": (125, 50, 165),
    "pink": (245, 135, 185),
    "brown": (110, 68, 34),
    "beige": (215, 192, 140),
    "teal": (20, 145, 145),
    "olive": (125, 125, 30),
}
TROUSER_COLOURS = ("black", "navy", "blue", "gray", "beige", "brown", "white", "dark_green", "olive", "maroon", "sky")
SHOE_COLOURS = ("black", "white", "brown", "red", "blue", "yellow")
HAT_COLOURS = ("black", "white", "red", "blue", "yellow", "green", "beige", "pink")
BAG_COLOURS = ("black", "red", "blue", "orange", "green", "brown", "pink", "gray")
HAIR: dict[str, tuple[int, int, int]] = {
    "black": (22, 18, 18),
    "dark_brown": (70, 42, 22),
    "brown": (135, 85, 40),
    "blonde": (225, 195, 115),
    "gray": (175, 175, 172),
    "auburn": (165, 60, 22),
}
SKIN: dict[str, tuple[int, int, int]] = {
    "light": (250, 218, 185),
    "medium": (225, 178, 138),
    "tan": (185, 135, 95),
    "dark": (120, 80, 52),
}
SHIRT_PATTERNS = ("plain", "stripes", "vstripes", "checks", "two_tone")
LEG_STYLES = ("trousers", "shorts", "skirt")
BAG_KINDS = ("none", "backpack", "shoulder", "handbag")

#: Which attributes belong to which body part; siblings differ in exactly one of these groups.
PART_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "head": ("hair_colour", "hair_length", "hat"),
    "upper": ("shirt_colour", "shirt_pattern", "pattern_colour", "sleeves"),
    "legs": ("leg_style", "trouser_colour"),
    "feet": ("shoe_colour",),
    "bag": ("bag", "bag_colour"),
}
PARTS = tuple(PART_ATTRIBUTES)
#: How often a sibling changes each part: feet are small at 128x64 and a backpack hides from
#: the front, so those two change rarely.
SIBLING_PART_WEIGHTS = {"head": 0.25, "upper": 0.4, "legs": 0.25, "feet": 0.04, "bag": 0.06}
#: A sibling's changed part differs in at least one of these (a sleeve length alone is too subtle).
SALIENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "head": ("hair_colour", "hat"),
    "upper": ("shirt_colour", "shirt_pattern"),
    "legs": ("trouser_colour",),
    "feet": ("shoe_colour",),
    "bag": ("bag", "bag_colour"),
}


@dataclass(frozen=True)
class IdentitySpec:
    """The appearance of one synthetic person.

    The part attributes are grouped in :data:`PART_ATTRIBUTES`; ``skin`` and ``build`` (a width
    factor) are whole-body traits that siblings copy from their parent.

    Attributes:
        sibling_of: index (in the list it was made in) of the identity this one copies, or None.
        changed_part: the one part (key of :data:`PART_ATTRIBUTES`) a sibling changed, or None.
    """

    skin: str
    build: float
    hair_colour: str
    hair_length: str  # "short" | "long"
    hat: str  # "none" or a colour name
    shirt_colour: str
    shirt_pattern: str
    pattern_colour: str  # "none" for plain shirts
    sleeves: str  # "long" | "short"
    leg_style: str
    trouser_colour: str
    shoe_colour: str
    bag: str
    bag_colour: str  # "none" without a bag
    sibling_of: int | None = None
    changed_part: str | None = None

    def part(self, name: str) -> tuple[str, ...]:
        """The attribute values of body part ``name`` (a key of :data:`PART_ATTRIBUTES`)."""
        return tuple(getattr(self, attr) for attr in PART_ATTRIBUTES[name])

    def appearance(self) -> tuple:
        """Everything that is drawn (all fields but the sibling bookkeeping)."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in ("sibling_of", "changed_part"))

    def to_dict(self) -> dict:
        """A JSON-ready dict of all fields."""
        return asdict(self)


def differing_parts(a: IdentitySpec, b: IdentitySpec) -> list[str]:
    """The body parts (keys of :data:`PART_ATTRIBUTES`) whose attributes differ between ``a`` and ``b``."""
    return [p for p in PARTS if a.part(p) != b.part(p)]


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str], p: list[float] | None = None) -> str:
    return str(options[int(rng.choice(len(options), p=p))])


def _luma(name: str) -> float:
    r, g, b = CLOTHES[name]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _sample_part(rng: np.random.Generator, part: str) -> dict[str, str]:
    """Random attribute values for one body part."""
    if part == "head":
        hat = _choice(rng, HAT_COLOURS) if rng.random() < 0.2 else "none"
        return {
            "hair_colour": _choice(rng, tuple(HAIR)),
            "hair_length": "long" if rng.random() < 0.35 else "short",
            "hat": hat,
        }
    if part == "upper":
        colour = _choice(rng, tuple(CLOTHES))
        pattern = _choice(rng, SHIRT_PATTERNS, p=[0.45, 0.15, 0.1, 0.15, 0.15])
        second = "none"
        if pattern != "plain":
            # the pattern must read after down-scaling, so its colour contrasts in brightness
            contrasting = [c for c in CLOTHES if c != colour and abs(_luma(c) - _luma(colour)) > 70]
            second = _choice(rng, contrasting)
        return {
            "shirt_colour": colour,
            "shirt_pattern": pattern,
            "pattern_colour": second,
            "sleeves": "short" if rng.random() < 0.35 else "long",
        }
    if part == "legs":
        return {
            "leg_style": _choice(rng, LEG_STYLES, p=[0.65, 0.2, 0.15]),
            "trouser_colour": _choice(rng, TROUSER_COLOURS),
        }
    if part == "feet":
        return {"shoe_colour": _choice(rng, SHOE_COLOURS)}
    if part == "bag":
        kind = _choice(rng, BAG_KINDS, p=[0.5, 0.25, 0.15, 0.1])
        return {"bag": kind, "bag_colour": "none" if kind == "none" else _choice(rng, BAG_COLOURS)}
    raise ValueError(f"unknown body part {part!r}; expected one of {PARTS}")


def sample_identity(rng: np.random.Generator) -> IdentitySpec:
    """A random identity with independent part attributes (no separation check)."""
    values: dict = {"skin": _choice(rng, tuple(SKIN)), "build": round(float(rng.uniform(0.88, 1.15)), 3)}
    for part in PARTS:
        values.update(_sample_part(rng, part))
    return IdentitySpec(**values)


def make_sibling(
    parent: IdentitySpec, parent_index: int, rng: np.random.Generator, part: str | None = None
) -> IdentitySpec:
    """Copy ``parent`` and re-draw exactly one body part until it differs in a salient attribute.

    The attributes that must change are :data:`SALIENT_ATTRIBUTES` (e.g. the trouser colour
    for the legs, not only the leg style), so that the difference shows at Market's size.

    Args:
        parent: the identity to copy.
        parent_index: its index, stored in ``sibling_of``.
        rng: random source.
        part: the part to change; drawn with :data:`SIBLING_PART_WEIGHTS` when None.
    """
    if part is None:
        part = _choice(rng, tuple(SIBLING_PART_WEIGHTS), p=list(SIBLING_PART_WEIGHTS.values()))
    for _ in range(1000):
        new_values: dict[str, Any] = _sample_part(rng, part)  # str fields only, which **-unpacking cannot show
        if any(new_values[a] != getattr(parent, a) for a in SALIENT_ATTRIBUTES[part]):
            return replace(parent, **new_values, sibling_of=parent_index, changed_part=part)
    raise RuntimeError(f"could not re-draw part {part!r} differently from its parent")


class _PartTable:
    """Part values of the identities made so far, as integer codes, for vectorised separation checks."""

    def __init__(self, capacity: int) -> None:
        self.codes = np.zeros((max(capacity, 1), len(PARTS)), dtype=np.int64)
        self.count = 0
        self._vocab: dict[tuple, int] = {}
        self.appearances: set[tuple] = set()

    def encode(self, spec: IdentitySpec) -> np.ndarray:
        keys = [(p, spec.part(p)) for p in PARTS]
        return np.array([self._vocab.setdefault(k, len(self._vocab)) for k in keys], dtype=np.int64)

    def min_parts_apart(self, spec: IdentitySpec, big_parts_too: bool) -> int:
        """Fewest differing parts to any stored identity (with ``big_parts_too``: 0 when upper and legs both match)."""
        if self.count == 0:
            return len(PARTS)
        code = self.encode(spec)
        diff = self.codes[: self.count] != code
        n_diff = diff.sum(axis=1)
        if big_parts_too:
            big = diff[:, PARTS.index("upper")] | diff[:, PARTS.index("legs")]
            n_diff = np.where(big, n_diff, 0)
        return int(n_diff.min())

    def add(self, spec: IdentitySpec) -> None:
        if self.count == len(self.codes):
            self.codes = np.concatenate([self.codes, np.zeros_like(self.codes)])
        self.codes[self.count] = self.encode(spec)
        self.count += 1
        self.appearances.add(spec.appearance())


def make_identity_groups(
    sizes: list[int],
    rng: np.random.Generator,
    *,
    sibling_fraction: float | list[float] = 0.2,
    min_parts_apart: int = 2,
) -> list[list[IdentitySpec]]:
    """Draw several groups of identities (e.g. train, test, distractors) that are well separated.

    Non-sibling identities differ from every other non-sibling (in all groups) in at least
    ``min_parts_apart`` body parts, one of them the upper body or the legs. In each group a
    fraction ``sibling_fraction`` are siblings: a copy of a non-sibling of the same group with
    exactly one part changed (``sibling_of`` indexes that group's list); each non-sibling has
    at most one sibling while the fraction is below one half. No two identities look the same.

    Args:
        sizes: number of identities per group.
        rng: random source.
        sibling_fraction: share of siblings per group (the issue asks for a minority); one
            value for all groups or one per group.
        min_parts_apart: separation between non-sibling identities, in body parts (0..5).

    Returns:
        One list of specs per group, siblings mixed in at random positions.
    """
    fractions = (
        list(sibling_fraction) if isinstance(sibling_fraction, (list, tuple)) else [sibling_fraction] * len(sizes)
    )
    if len(fractions) != len(sizes) or not all(0.0 <= f < 1.0 for f in fractions):
        raise ValueError(f"sibling_fraction must be in [0, 1), one value or one per group; got {sibling_fraction}")
    table = _PartTable(sum(sizes))
    relaxed = 0
    bases: list[list[IdentitySpec]] = []
    for size, fraction in zip(sizes, fractions, strict=True):
        n_siblings = min(int(round(fraction * size)), size - 1) if size >= 2 else 0
        group: list[IdentitySpec] = []
        for _ in range(size - n_siblings):
            spec = sample_identity(rng)
            for attempt in range(200):
                need = min_parts_apart if attempt < 150 else 1
                if spec.appearance() not in table.appearances and table.min_parts_apart(spec, need >= 2) >= need:
                    break
                spec = sample_identity(rng)
            else:
                raise RuntimeError("could not draw a new distinct identity; lower the number of identities")
            relaxed += need < min_parts_apart
            table.add(spec)
            group.append(spec)
        bases.append(group)
    if relaxed:
        log.info("%d identities were drawn with a relaxed separation (1 part) to fit the palette", relaxed)

    groups = []
    for size, group in zip(sizes, bases, strict=True):
        n_base = len(group)
        specs = list(group)
        # one sibling per parent while parents last: pairs, not families, of look-alikes
        parents = [int(i) for i in rng.permutation(n_base)]
        for k in range(size - n_base):
            for attempt in range(200):
                parent_index = parents[k % n_base] if attempt == 0 else int(rng.integers(n_base))
                sibling = make_sibling(group[parent_index], parent_index, rng)
                if sibling.appearance() not in table.appearances:
                    break
            else:
                raise RuntimeError("could not draw a distinct sibling identity; lower sibling_fraction")
            table.add(sibling)
            specs.append(sibling)
        # siblings point into `group`; shuffle and remap so that sibling_of indexes the shuffled list
        order = rng.permutation(size)
        new_position = {int(old): new for new, old in enumerate(order)}
        shuffled = [specs[int(old)] for old in order]
        groups.append(
            [s if s.sibling_of is None else replace(s, sibling_of=new_position[s.sibling_of]) for s in shuffled]
        )
    return groups

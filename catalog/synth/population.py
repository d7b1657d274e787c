"""Who is in the synthetic dataset: identities, their images, attributes and poses.

Everything here is vectorised with numpy and drawn from generators seeded by
``(seed, stream)``, so a population is a pure function of ``(ids, seed, images,
max_side, style)`` and costs well under a second at CelebA's full size; the renderer
and the annotation writer both read from it.

Two styles (``STYLES``):

* ``"hard"`` (the default): identity lives in the face's geometry, as in photographs.
  Each person has a stable face (some 35 shape parameters: head and jaw outline, eye
  spacing, size, opening and tilt, brows, nose, lips, ears, moles), drawn in families
  of look-alikes that share most of it; skin tone is per person too. Everything a
  colour-and-layout model could key on varies per image and is shared across people:
  hair colour, style, fringe and parting (with the hair attributes following the
  pixels), make-up colours, lighting, colour cast, exposure, background, pose and
  expression. A logistic regression on 16x16 face thumbnails scores close to chance
  (``bench/identity_probe.py``), while a CNN on aligned crops can learn the faces.
* ``"easy"``: the first population, kept value for value: every trait of the look,
  hair included, is constant per identity, and such a probe tells most people apart
  by their colours.

Which attributes are stable per identity and which vary per image is set by
:func:`identity_attributes`; rates follow CelebA's published positive rates, split by
sex where CelebA's are strongly sex-linked (make-up, beards, baldness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np

from catalog.formats import ATTRIBUTES
from catalog.synth import geometry

#: CelebA: 202,599 images of 10,177 identities, 1 to 35 images each.
CELEBA_IMAGES = 202_599
CELEBA_IDENTITIES = 10_177
MAX_IMAGES_PER_IDENTITY = 35

#: Population styles; the first is the default.
STYLES: tuple[str, ...] = ("hard", "easy")
DEFAULT_STYLE = STYLES[0]

#: Attributes constant for an identity in the easy style (drawn from its traits);
#: every other attribute is drawn per image, around a per-identity propensity. The
#: hard style also varies the hair and facial hair ones (``LOOK_ATTRIBUTES``) per
#: image: see :func:`identity_attributes`.
IDENTITY_ATTRIBUTES: tuple[str, ...] = (
    "Arched_Eyebrows",
    "Attractive",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Goatee",
    "Gray_Hair",
    "High_Cheekbones",
    "Male",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Sideburns",
    "Straight_Hair",
    "Wavy_Hair",
    "Young",
)
IMAGE_ATTRIBUTES: tuple[str, ...] = tuple(a for a in ATTRIBUTES if a not in IDENTITY_ATTRIBUTES)
#: What the hard style draws per image from today's hair (colour, style, fringe) and
#: facial hair.
LOOK_ATTRIBUTES: tuple[str, ...] = (
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Gray_Hair",
    "Straight_Hair",
    "Wavy_Hair",
    "Goatee",
    "Mustache",
    "No_Beard",
    "Bald",
)


def check_style(style: str) -> str:
    """``style`` if it is one of ``STYLES``, else ValueError naming them."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: use one of {', '.join(STYLES)}")
    return style


def identity_attributes(style: str = DEFAULT_STYLE) -> tuple[str, ...]:
    """The attributes that are constant for an identity in ``style``."""
    if check_style(style) == "easy":
        return IDENTITY_ATTRIBUTES
    return tuple(a for a in IDENTITY_ATTRIBUTES if a not in LOOK_ATTRIBUTES)


_COL = {name: i for i, name in enumerate(ATTRIBUTES)}
_T = TypeVar("_T", bound="_Columns")

# Hair styles (FaceTraits.hair_style).
BALD, SHORT, MEDIUM, LONG, CURLY, BUN = range(6)
# Hair texture (FaceTraits.hair_wave): drawn outline and the Straight/Wavy labels.
NEITHER, STRAIGHT, WAVY = range(3)

# Colour palettes, RGB. Skin tones are shared by many identities on purpose: a
# recogniser must not be able to tell people apart by colour alone.
_SKIN = np.array(
    [
        [241, 194, 170],
        [228, 176, 146],
        [234, 188, 156],
        [200, 148, 112],
        [178, 125, 92],
        [144, 98, 68],
        [112, 74, 52],
        [88, 58, 42],
    ],
    dtype=np.float64,
)
_SKIN_P = np.array([0.19, 0.18, 0.17, 0.15, 0.12, 0.08, 0.06, 0.05])
_PALE_SKIN = np.array([[250, 224, 212], [247, 230, 222]], dtype=np.float64)
_HAIR = {  # name -> (rgb, jitter)
    "Black_Hair": ((30, 26, 26), 6),
    "Brown_Hair": ((104, 66, 40), 10),
    "Blond_Hair": ((216, 184, 122), 12),
    "Gray_Hair": ((172, 172, 174), 12),
    "red": ((156, 64, 34), 10),
    "auburn": ((114, 46, 32), 8),
}
_EYES = np.array(
    [[72, 46, 30], [112, 82, 42], [72, 112, 164], [82, 122, 82], [112, 122, 132]],
    dtype=np.float64,
)
_EYES_P = np.array([0.55, 0.15, 0.15, 0.08, 0.07])
_LIPSTICK = np.array([[190, 30, 45], [170, 20, 60], [215, 80, 110], [140, 30, 50]], np.float64)
_FRAMES = np.array([[20, 20, 20], [70, 40, 25], [150, 120, 60], [40, 40, 70]], np.float64)
_JEWELS = np.array([[212, 175, 55], [196, 196, 206]], dtype=np.float64)
_SHADOW_EASY = np.array([110.0, 60.0, 120.0])
_SHADOWS = np.array(
    [[110, 60, 120], [70, 90, 140], [120, 80, 50], [60, 110, 80], [150, 100, 110], [50, 40, 60]],
    dtype=np.float64,
)

# CelebA positive rates by sex (male, female), chosen so that with 41.7 % Male the
# overall rates match CelebA's (e.g. Heavy_Makeup 0.387, Arched_Eyebrows 0.267).
_ID_RATES: dict[str, tuple[float, float]] = {
    "Attractive": (0.28, 0.68),
    "Young": (0.66, 0.86),
    "Pale_Skin": (0.02, 0.06),
    "Big_Nose": (0.42, 0.10),
    "Pointy_Nose": (0.18, 0.35),
    "Narrow_Eyes": (0.115, 0.115),
    "Oval_Face": (0.22, 0.33),
    "Chubby": (0.11, 0.021),
    "Big_Lips": (0.15, 0.31),
    "Bushy_Eyebrows": (0.25, 0.065),
    "Arched_Eyebrows": (0.05, 0.42),
    "High_Cheekbones": (0.30, 0.57),
    "Double_Chin": (0.09, 0.016),
    "Receding_Hairline": (0.13, 0.044),
    "Bald": (0.053, 0.0),
    "Bangs": (0.06, 0.22),
    "Sideburns": (0.137, 0.0),
}
# Per-image attributes: (male rate, female rate, concentration). The per-identity
# propensity is Beta-distributed around the rate; a small concentration makes the
# attribute cling to some identities (glasses wearers), a large one spreads it evenly.
_IMG_RATES: dict[str, tuple[float, float, float]] = {
    "Eyeglasses": (0.10, 0.04, 0.8),
    "Wearing_Hat": (0.05, 0.047, 1.5),
    "Heavy_Makeup": (0.01, 0.657, 3.0),
    "Wearing_Lipstick": (0.01, 0.80, 3.0),
    "Rosy_Cheeks": (0.005, 0.11, 2.0),
    "Wearing_Earrings": (0.03, 0.30, 2.0),
    "Wearing_Necklace": (0.01, 0.20, 2.0),
    "Wearing_Necktie": (0.17, 0.004, 1.5),
    "Bags_Under_Eyes": (0.32, 0.12, 3.0),
    "Smiling": (0.482, 0.482, 6.0),
}
#: The hard style spreads accessories and make-up more evenly over people (glasses
#: for reading, a hat outdoors): each concentration times this.
_HARD_CONCENTRATION = 6.0
_MALE_RATE = 0.417
_BLURRY_RATE = 0.051
# Mouth_Slightly_Open given Smiling / not Smiling: overall 0.483, strongly tied to
# smiling as in CelebA.
_OPEN_IF_SMILING, _OPEN_IF_NOT = 0.72, 0.27


@dataclass(frozen=True)
class _Columns:
    """A table as a dataclass of equally long numpy columns (struct of arrays)."""

    def take(self: _T, index: Any) -> _T:
        """Rows selected by a numpy index (int array, slice or mask)."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def row(self: _T, i: int) -> _T:
        """Row ``i`` as a one-row table (columns of length 1)."""
        return self.take(np.array([i]))

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))


@dataclass(frozen=True)
class FaceTraits(_Columns):
    """The stable look of identities, one row per identity.

    Lengths are in the face frame of :mod:`catalog.synth.geometry` (units of head
    height, origin at the head centre, y down); angles in radians; colours RGB floats
    (K, 3). Booleans are numpy bool arrays.
    """

    face_w: np.ndarray  # head width / head height
    jaw: np.ndarray  # how much the lower face narrows toward the chin (0 = ellipse)
    eye_y: np.ndarray
    eye_dx: np.ndarray  # half the distance between the eye centres
    eye_rx: np.ndarray  # eye half-width
    eye_open: np.ndarray  # eye half-height / half-width (small for Narrow_Eyes)
    brow_gap: np.ndarray  # eye centre to eyebrow
    brow_thick: np.ndarray
    brow_tilt: np.ndarray
    brow_arch: np.ndarray
    nose_len: np.ndarray  # eye line to nose tip
    nose_w: np.ndarray  # half-width of the nose wings
    nose_tip: np.ndarray  # roundness of the tip (small = Pointy_Nose)
    nose_z: np.ndarray  # how far the tip stands out (moves it when the head turns)
    mouth_drop: np.ndarray  # eye line to mouth line
    mouth_hw: np.ndarray  # half-width of the neutral mouth
    lip_thick: np.ndarray
    ear_size: np.ndarray
    skin: np.ndarray
    hair_rgb: np.ndarray
    brow_rgb: np.ndarray
    eye_rgb: np.ndarray
    lip_rgb: np.ndarray
    hair_style: np.ndarray  # BALD, SHORT, MEDIUM, LONG, CURLY, BUN
    hair_wave: np.ndarray  # NEITHER, STRAIGHT, WAVY
    hair_volume: np.ndarray
    hairline: np.ndarray  # y of the hairline at the forehead centre
    part: np.ndarray  # -1 or 1: side of the parting / fringe sweep
    bangs: np.ndarray
    receding: np.ndarray
    beard: np.ndarray
    goatee: np.ndarray
    mustache: np.ndarray
    sideburns: np.ndarray
    chubby: np.ndarray
    double_chin: np.ndarray
    cheekbones: np.ndarray
    young: np.ndarray
    mark: np.ndarray  # a mole: a small, person-specific detail
    mark_x: np.ndarray
    mark_y: np.ndarray
    # Shape parameters of the hard style; the easy style holds the constants its
    # drawing always used (``_NEUTRAL_SHAPE``), so both go through the same code.
    chin_pow: np.ndarray  # where the jaw narrows: large = a square jaw, small = a V
    temple: np.ndarray  # how much the head narrows toward the crown
    eye_tilt: np.ndarray  # outer eye corners up (+) or down, as a slope
    iris: np.ndarray  # iris size / the largest that fits the eye
    crease: np.ndarray  # eyelid crease height / eye half-height; 0 = none drawn
    brow_len: np.ndarray  # brow length / eye half-width
    brow_dx: np.ndarray  # inner brow end, outward from the eye centre line
    brow_taper: np.ndarray  # how much the brow thins toward its outer end
    nose_bridge: np.ndarray  # half-width of the nose bridge between the eyes
    nostril: np.ndarray  # size of the nose wings and nostrils
    lip_up: np.ndarray  # upper lip height / lip_thick
    lip_lo: np.ndarray  # lower lip height / lip_thick
    lip_bow: np.ndarray  # depth of the cupid's bow
    mouth_sag: np.ndarray  # how far the neutral lip line sags below the corners
    ear_dy: np.ndarray  # ear centre below the eye line
    ear_w: np.ndarray  # ear half-width (times ear_size)
    mark2: np.ndarray  # a second mole
    mark2_x: np.ndarray
    mark2_y: np.ndarray
    folds: np.ndarray  # nasolabial folds drawn (the easy style: everyone not Young)
    cleft: np.ndarray  # a cleft chin
    dimples: np.ndarray  # dimples beside the mouth when smiling
    freckles: np.ndarray  # int64 seed of the person's freckle pattern; 0 = none
    contour: np.ndarray  # shade the jaw line and the sides of the nose (hard style)


#: The constants the easy style's drawing used for the shape parameters above.
_NEUTRAL_SHAPE: dict[str, float] = {
    "chin_pow": 2.0,
    "temple": 0.0,
    "eye_tilt": 0.0,
    "iris": 1.0,
    "crease": 0.0,
    "brow_len": 1.3,
    "brow_dx": 0.012,
    "brow_taper": 0.45,
    "nose_bridge": 0.018,
    "nostril": 1.0,
    "lip_up": 0.85,
    "lip_lo": 1.1,
    "lip_bow": 0.007,
    "mouth_sag": 0.006,
    "ear_dy": 0.07,
    "ear_w": 0.045,
    "mark2": False,
    "mark2_x": 0.0,
    "mark2_y": 0.0,
    "cleft": False,
    "dimples": False,
    "freckles": 0,
    "contour": False,
}


@dataclass(frozen=True)
class Pose(_Columns):
    """Per-image variation, one row per image.

    ``width``/``height`` are the in-the-wild image size; ``cx``, ``cy`` the head centre
    and ``face_h`` the head height, in image pixels; ``roll`` (in-plane, clockwise on
    screen), ``yaw`` (head turn) and ``pitch`` (nod) in radians. ``index`` and ``seed`` seed the
    renderer's own random draws (clutter, noise), so an image depends only on its row.
    """

    index: np.ndarray
    seed: np.ndarray
    width: np.ndarray
    height: np.ndarray
    face_h: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    roll: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray  # nod, positive looking down
    box_jitter: np.ndarray  # (N, 4)
    quality: np.ndarray  # JPEG quality
    blur: np.ndarray  # Gaussian blur radius in pixels, applied iff Blurry
    light_angle: np.ndarray
    light_strength: np.ndarray
    shade_side: np.ndarray
    shade_alpha: np.ndarray
    exposure: np.ndarray
    white_balance: np.ndarray  # (N, 3) per-channel gains: the camera's colour cast
    gamma: np.ndarray
    hair_scale: np.ndarray  # today's hair volume / the identity's (hair is not rigid)
    hair_length: np.ndarray  # today's length of medium and long hair / the identity's
    brow_raise: np.ndarray  # expression: brows up (face units)
    eye_squint: np.ndarray  # expression: eye opening / the identity's
    noise: np.ndarray  # noise standard deviation, grey levels
    bg0: np.ndarray
    bg1: np.ndarray
    clothes: np.ndarray
    frame_rgb: np.ndarray
    sunglasses: np.ndarray
    hat_rgb: np.ndarray
    hat_style: np.ndarray
    lipstick_rgb: np.ndarray
    jewel_rgb: np.ndarray
    tie_rgb: np.ndarray
    # Today's hair, which the hard style varies per image (the easy style copies the
    # identity's): colour, style, texture, fringe and parting side, and facial hair.
    hair_rgb: np.ndarray  # (N, 3)
    hair_style: np.ndarray
    hair_wave: np.ndarray
    bangs: np.ndarray
    part: np.ndarray
    beard: np.ndarray
    goatee: np.ndarray
    mustache: np.ndarray
    tint: np.ndarray  # (N, 3) coloured light: added to each channel, grey levels
    saturation: np.ndarray  # colour saturation of the photo: 1 as drawn, 0 black and white
    skin_gain: np.ndarray  # today's complexion: the skin (and lip) colour times this
    shadow_rgb: np.ndarray  # (N, 3) eye shadow colour (Heavy_Makeup)


@dataclass(frozen=True)
class Layout(_Columns):
    """Ground truth of each image, as written to the annotation files.

    ``landmarks`` (N, 5, 2) int64 and ``bbox`` (N, 4) int64 ``x_1, y_1, width, height``
    are in in-the-wild image pixels; ``aligned_matrix`` (N, 2, 3) maps in-the-wild
    pixels to the 178x218 aligned frame, where ``aligned_landmarks`` (N, 5, 2) lie.
    """

    landmarks: np.ndarray
    bbox: np.ndarray
    aligned_matrix: np.ndarray
    aligned_landmarks: np.ndarray


@dataclass(frozen=True)
class Population:
    """A whole synthetic dataset before any pixels: identities and images in file order.

    Image ``i`` (0-based) is ``f"{i + 1:06d}.jpg"``; ``identity[i]`` is its identity
    index (0-based; the identity number in identity_CelebA.txt is ``identity + 1``).
    ``attributes`` (N, 40) int8 holds -1/1 in ``formats.ATTRIBUTES`` order.
    """

    seed: int
    counts: np.ndarray  # (K,) images per identity
    identity_partition: np.ndarray  # (K,) 0 train, 1 valid, 2 test
    traits: FaceTraits  # K rows
    identity: np.ndarray  # (N,)
    partition: np.ndarray  # (N,)
    attributes: np.ndarray  # (N, 40)
    poses: Pose  # N rows
    layout: Layout  # N rows
    style: str = DEFAULT_STYLE
    #: (K,) family of each identity: look-alikes share most of their face. None for
    #: the easy style, whose identities are unrelated.
    family: np.ndarray | None = None

    @property
    def ids(self) -> int:
        return len(self.counts)

    @property
    def images(self) -> int:
        return len(self.identity)

    def face(self, i: int) -> tuple[FaceTraits, Pose, dict[str, bool]]:
        """Everything :func:`catalog.synth.render_face` needs to draw image ``i``."""
        attrs = {name: bool(v > 0) for name, v in zip(ATTRIBUTES, self.attributes[i], strict=True)}
        return self.traits.row(int(self.identity[i])), self.poses.row(i), attrs


def default_image_count(ids: int) -> int:
    """CelebA's mean images per identity times ``ids`` (10,177 ids -> 202,599 images)."""
    return round(ids * CELEBA_IMAGES / CELEBA_IDENTITIES)


def _rng(seed: int, stream: int) -> np.random.Generator:
    # Separate streams, so that changing how one part draws does not reshuffle the rest.
    return np.random.default_rng([seed, stream])


def images_per_identity(ids: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """Image counts (ids,) in 1..35 that sum to ``total``, shaped like CelebA's.

    A third of identities have few images (1-19); the rest 20-35, peaking in the low
    twenties, so about 30 % of identities reach 25 images before any filtering.
    """
    big = np.arange(20, MAX_IMAGES_PER_IDENTITY + 1)
    w = np.exp(-(((big - 24.0) / 6.0) ** 2))
    small = rng.random(ids) < 0.33
    counts = np.where(
        small, rng.integers(1, 20, ids), rng.choice(big, size=ids, p=w / w.sum())
    ).astype(np.int64)
    # Scale to the requested total, then fix the rounding remainder one image at a time
    # on random identities that still have room.
    counts = np.clip(np.rint(counts * (total / counts.sum())), 1, MAX_IMAGES_PER_IDENTITY)
    counts = counts.astype(np.int64)
    while (diff := total - int(counts.sum())) != 0:
        room = counts < MAX_IMAGES_PER_IDENTITY if diff > 0 else counts > 1
        cand = np.flatnonzero(room)
        pick = rng.choice(cand, size=min(abs(diff), len(cand)), replace=False)
        counts[pick] += 1 if diff > 0 else -1
    return counts


def split_identities(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Partition per identity (0 train, 1 valid, 2 test), about 80/10/10 of images.

    Whole identities go to one partition, as in CelebA; with 3 or more identities every
    partition gets at least one.
    """
    ids = len(counts)
    perm = rng.permutation(ids)
    start = np.cumsum(counts[perm]) - counts[perm]
    frac = start / counts.sum()
    part = np.empty(ids, dtype=np.int8)
    part[perm] = np.where(frac < 0.8, 0, np.where(frac < 0.9, 1, 2))
    if ids >= 3:
        for p, who in ((2, perm[-1]), (1, perm[-2]), (0, perm[0])):
            if not (part == p).any():
                part[who] = p
    return part


def order_images(
    counts: np.ndarray, identity_partition: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Identity index of each image in file order.

    As in CelebA, the train images come first, then valid, then test, and within each
    block the identities are interleaved (shuffled), not grouped.
    """
    blocks = []
    for p in (0, 1, 2):
        who = np.flatnonzero(identity_partition == p)
        block = np.repeat(who, counts[who])
        blocks.append(block[rng.permutation(len(block))])
    return np.concatenate(blocks)


def _pick(
    rng: np.random.Generator, palette: np.ndarray, p: np.ndarray | None, n: int, jitter: float
) -> np.ndarray:
    idx = rng.choice(len(palette), size=n, p=p)
    return np.clip(palette[idx] + rng.normal(0.0, jitter, (n, 3)), 0, 255)


def _neutral_shape(ids: int) -> dict[str, np.ndarray]:
    types = {bool: bool, int: np.int64, float: np.float64}
    return {k: np.full(ids, v, dtype=types[type(v)]) for k, v in _NEUTRAL_SHAPE.items()}


def draw_identities(ids: int, rng: np.random.Generator) -> tuple[np.ndarray, FaceTraits, dict]:
    """The easy style's identities: attributes (ids, 40) int8 (0 where per-image),
    traits, and propensities.

    The propensities map each per-image attribute to a per-identity probability.
    """

    def u(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, ids)

    male = rng.random(ids) < _MALE_RATE
    has = {name: rng.random(ids) < np.where(male, m, f) for name, (m, f) in _ID_RATES.items()}
    young = has["Young"]

    # Hair: bald only for men; styles and textures by sex.
    bald = has["Bald"]
    style = np.where(
        male,
        rng.choice([SHORT, MEDIUM, LONG, CURLY], size=ids, p=[0.72, 0.15, 0.05, 0.08]),
        rng.choice([SHORT, MEDIUM, LONG, CURLY, BUN], size=ids, p=[0.05, 0.22, 0.55, 0.08, 0.10]),
    )
    style = np.where(bald, BALD, style)
    short = style == SHORT
    wave = np.where(
        rng.random(ids) < np.where(short, 0.2, 0.28),
        STRAIGHT,
        np.where(rng.random(ids) < np.where(short, 0.1, 0.5), WAVY, NEITHER),
    )
    wave = np.where(style == CURLY, WAVY, np.where(bald, NEITHER, wave))
    bangs = has["Bangs"] & ~bald & (style != BUN)
    receding = has["Receding_Hairline"] & ~bald & ~bangs

    # Hair colour: one category per identity; grey mostly for the not-young.
    names = ["Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair", "red", "auburn"]
    p_male = np.array([0.31, 0.19, 0.04, 0.07, 0.15, 0.24])
    p_female = np.array([0.20, 0.23, 0.23, 0.02, 0.13, 0.19])
    hair_cat = np.empty(ids, dtype=np.int64)
    for sex, p in ((True, p_male), (False, p_female)):
        for is_young, grey_factor in ((True, 0.35), (False, 3.0)):
            sel = (male == sex) & (young == is_young)
            q = p.copy()
            q[3] *= grey_factor
            hair_cat[sel] = rng.choice(len(names), size=int(sel.sum()), p=q / q.sum())
    hair_rgb = np.empty((ids, 3))
    for k, name in enumerate(names):
        sel = hair_cat == k
        base, jit = _HAIR[name]
        hair_rgb[sel] = np.clip(np.array(base) + rng.normal(0, jit, (int(sel.sum()), 3)), 0, 255)
    # Brows a shade darker than the hair; blond people's brows much darker.
    brow_rgb = np.where((hair_cat == names.index("Blond_Hair"))[:, None], 0.7, 0.85) * hair_rgb
    brow_rgb = np.where(bald[:, None], np.array([60.0, 44.0, 36.0]), brow_rgb)

    # Facial hair (men only); No_Beard is false when any of it is drawn.
    beard = male & (rng.random(ids) < 0.20)
    goatee = male & (rng.random(ids) < 0.15)
    mustache = male & (rng.random(ids) < 0.10)
    sideburns = has["Sideburns"] & ~bald & male

    skin = np.where(
        has["Pale_Skin"][:, None],
        _pick(rng, _PALE_SKIN, None, ids, 3.0),
        _pick(rng, _SKIN, _SKIN_P, ids, 4.0),
    )
    lip_rgb = skin + (np.array([178.0, 76.0, 80.0]) - skin) * u(0.35, 0.55)[:, None]

    chubby, oval = has["Chubby"], has["Oval_Face"]
    face_w = np.where(oval, u(0.69, 0.74), u(0.71, 0.82)) + 0.02 * male + 0.06 * chubby
    jaw = np.where(oval, u(0.10, 0.16), u(0.04, 0.30)) + 0.08 * has["High_Cheekbones"]
    jaw = np.clip(jaw - 0.12 * chubby, 0.0, None)
    # Proportions centred on CelebA's mean face (geometry.ALIGNED_TEMPLATE): eye
    # distance / eye-to-mouth drop ~0.95, nose tip ~0.57 of the drop, mouth ~0.85 of
    # the eye distance. Alignment templates are fitted to faces like these, so the
    # typical synthetic face aligns onto them as a typical CelebA face would.
    nose_len = u(0.16, 0.205) + 0.02 * has["Big_Nose"]
    traits = FaceTraits(
        face_w=face_w,
        jaw=jaw,
        eye_y=u(-0.035, 0.015),
        eye_dx=u(0.14, 0.165),
        eye_rx=u(0.052, 0.068),
        eye_open=np.where(has["Narrow_Eyes"], u(0.26, 0.34), u(0.42, 0.6)),
        brow_gap=u(0.06, 0.085),
        brow_thick=np.where(has["Bushy_Eyebrows"], u(0.028, 0.038), u(0.012, 0.02)) + 0.004 * male,
        brow_tilt=u(-0.12, 0.12),
        brow_arch=np.where(has["Arched_Eyebrows"], u(0.03, 0.045), u(0.0, 0.016)),
        nose_len=nose_len,
        nose_w=np.where(has["Big_Nose"], u(0.085, 0.1), u(0.055, 0.075)),
        nose_tip=np.where(has["Pointy_Nose"], u(0.3, 0.5), u(0.65, 1.0)),
        nose_z=u(0.08, 0.14),
        mouth_drop=nose_len + u(0.12, 0.155),
        mouth_hw=u(0.115, 0.145),
        lip_thick=np.where(has["Big_Lips"], u(0.032, 0.042), u(0.018, 0.028)) - 0.003 * male,
        ear_size=u(0.85, 1.15),
        skin=skin,
        hair_rgb=hair_rgb,
        brow_rgb=brow_rgb,
        eye_rgb=_pick(rng, _EYES, _EYES_P, ids, 8.0),
        lip_rgb=lip_rgb,
        hair_style=style.astype(np.int8),
        hair_wave=wave.astype(np.int8),
        hair_volume=np.where(np.isin(style, [LONG, CURLY]), u(0.05, 0.1), u(0.025, 0.05)),
        hairline=np.where(receding, u(-0.40, -0.36), u(-0.33, -0.27)),
        part=np.where(rng.random(ids) < 0.5, -1.0, 1.0),
        bangs=bangs,
        receding=receding,
        beard=beard,
        goatee=goatee,
        mustache=mustache,
        sideburns=sideburns,
        chubby=chubby,
        double_chin=has["Double_Chin"],
        cheekbones=has["High_Cheekbones"],
        young=young,
        mark=rng.random(ids) < 0.25,
        mark_x=u(-0.25, 0.25),
        mark_y=u(-0.2, 0.3),
        folds=~young,
        **_neutral_shape(ids),
    )

    attrs = np.zeros((ids, len(ATTRIBUTES)), dtype=np.int8)

    def sign(flag: np.ndarray) -> np.ndarray:
        return np.where(flag, 1, -1).astype(np.int8)

    for name in _ID_RATES:
        attrs[:, _COL[name]] = sign(has[name])
    attrs[:, _COL["Male"]] = sign(male)
    attrs[:, _COL["Bangs"]] = sign(bangs)
    attrs[:, _COL["Receding_Hairline"]] = sign(receding)
    attrs[:, _COL["Sideburns"]] = sign(sideburns)
    for k, name in enumerate(names[:4]):
        attrs[:, _COL[name]] = sign((hair_cat == k) & ~bald)
    attrs[:, _COL["Straight_Hair"]] = sign(wave == STRAIGHT)
    attrs[:, _COL["Wavy_Hair"]] = sign(wave == WAVY)
    attrs[:, _COL["Goatee"]] = sign(goatee)
    attrs[:, _COL["Mustache"]] = sign(mustache)
    attrs[:, _COL["No_Beard"]] = sign(~(beard | goatee | mustache))

    propensity = {}
    for name, (m, f, conc) in _IMG_RATES.items():
        mean = np.where(male, m, f)
        propensity[name] = rng.beta(mean * conc, (1.0 - mean) * conc)
    # Stubble only on men without a full beard: 0.111 overall.
    stubble = np.where(male & ~beard, 0.33, 0.0)
    propensity["5_o_Clock_Shadow"] = np.where(stubble > 0, rng.beta(0.66, 1.34, ids), 0.0)
    return attrs, traits, propensity


# -- the hard style ---------------------------------------------------------------------

#: Family sizes (1 = no look-alike) and their shares: about half the identities have a
#: relative in the dataset, hard negatives for a recogniser.
_FAMILY_SIZES = np.array([1, 2, 3, 4])
_FAMILY_P = np.array([0.5, 0.25, 0.15, 0.10])
#: How far a relative's draws stray from the family's, in a Gaussian copula: 0 makes
#: twins, 1 strangers; the draws of two relatives correlate ``1 - spread**2`` (0.7).
_KIN_SPREAD = 0.55
#: Per image, the chance of the identity's usual hair colour, style, texture and parting
#: side; otherwise they are drawn afresh from everyone's distribution, so that the
#: attribute rates stay CelebA's.
_KEEP_HAIR_COLOUR, _KEEP_HAIR_STYLE, _KEEP_WAVE, _KEEP_PART = 0.1, 0.15, 0.8, 0.6
#: ... and of a man's usual beard, goatee and moustache (grown, trimmed, shaved).
_KEEP_FACIAL_HAIR = 0.15
#: A bald man's head on the day (else short hair), and another man's shaved head.
_KEEP_BALD, _BALD_IF_NOT = 0.6, 0.02
_BEARD_RATE, _GOATEE_RATE, _MUSTACHE_RATE = 0.20, 0.15, 0.10
#: A fringe on the day: for people who usually wear one, and for the others.
_BANGS_IF_USUAL, _BANGS_IF_NOT = 0.8, 0.04
_GREY_PHOTOS = 0.04
_HAIR_NAMES = ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair", "red", "auburn")
_HAIR_BASE = np.array([_HAIR[name][0] for name in _HAIR_NAMES], dtype=np.float64)
_HAIR_JITTER = np.array([_HAIR[name][1] for name in _HAIR_NAMES], dtype=np.float64)
# Hair colour shares by sex (as in the easy style), and how age scales grey.
_HAIR_P_MALE = np.array([0.31, 0.19, 0.04, 0.07, 0.15, 0.24])
_HAIR_P_FEMALE = np.array([0.20, 0.23, 0.23, 0.02, 0.13, 0.19])
_GREY_IF_YOUNG, _GREY_IF_OLD = 0.35, 3.0
# Hair style shares by sex over (BALD, SHORT, MEDIUM, LONG, CURLY, BUN).
_STYLE_P_MALE = np.array([0.0, 0.72, 0.15, 0.05, 0.08, 0.0])
_STYLE_P_FEMALE = np.array([0.0, 0.05, 0.22, 0.55, 0.08, 0.10])

_erf = np.frompyfunc(math.erf, 1, 1)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)).astype(np.float64))


def draw_families(ids: int, rng: np.random.Generator) -> np.ndarray:
    """Family index (ids,) of each identity, families of 1 to 4 in random positions."""
    sizes = rng.choice(_FAMILY_SIZES, size=ids, p=_FAMILY_P)
    family = np.repeat(np.arange(ids), sizes)[:ids]
    return family[rng.permutation(ids)]


class _Kin:
    """Uniform draws per identity that are alike within a family.

    Each draw is a Gaussian copula: the family's normal draw mixed with the person's
    own, mapped through the normal CDF. Every marginal stays exactly uniform, so rates
    and ranges are as if drawn independently; only relatives resemble each other.
    """

    def __init__(self, family: np.ndarray, rng: np.random.Generator) -> None:
        self.family, self.rng = family, rng
        self.families = int(family.max()) + 1

    def uniform(self, spread: float = _KIN_SPREAD) -> np.ndarray:
        shared = self.rng.standard_normal(self.families)[self.family]
        own = self.rng.standard_normal(len(self.family))
        return _normal_cdf(math.sqrt(1.0 - spread**2) * shared + spread * own)

    def u(self, lo: float, hi: float, spread: float = _KIN_SPREAD) -> np.ndarray:
        return lo + (hi - lo) * self.uniform(spread)

    def flag(self, p: float | np.ndarray, spread: float = _KIN_SPREAD) -> np.ndarray:
        return self.uniform(spread) < p

    def choice(self, p: np.ndarray, spread: float = _KIN_SPREAD) -> np.ndarray:
        """Category index per identity; ``p`` is (C,) or per identity (ids, C)."""
        return _inverse_cdf(self.uniform(spread), p)


def _inverse_cdf(u: np.ndarray, p: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(np.atleast_2d(p), axis=1)
    cdf = cdf / cdf[:, -1:]
    return (u[:, None] > cdf[:, :-1]).sum(axis=1)


def _style_p(male: np.ndarray) -> np.ndarray:
    return np.where(male[:, None], _STYLE_P_MALE, _STYLE_P_FEMALE)


def _hair_colour_p(male: np.ndarray, young: np.ndarray) -> np.ndarray:
    p = np.where(male[:, None], _HAIR_P_MALE, _HAIR_P_FEMALE).copy()
    p[:, 3] *= np.where(young, _GREY_IF_YOUNG, _GREY_IF_OLD)
    return p / p.sum(axis=1, keepdims=True)


def _wave(style: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Hair texture from two uniforms, at the easy style's rates for each style."""
    short = style == SHORT
    wave = np.where(
        u1 < np.where(short, 0.2, 0.28),
        STRAIGHT,
        np.where(u2 < np.where(short, 0.1, 0.5), WAVY, NEITHER),
    )
    return np.where(style == CURLY, WAVY, np.where(style == BALD, NEITHER, wave))


def _skin_tones(kin: _Kin, pale: np.ndarray) -> np.ndarray:
    """A continuous skin tone per identity along the palette, light to dark.

    No per-channel jitter: an identity's tone is one number, which the per-image
    lighting and colour cast blur, not a colour fingerprint.
    """
    order = np.argsort(-(_SKIN @ np.array([0.3, 0.59, 0.11])))
    palette, p = _SKIN[order], _SKIN_P[order]
    knots = np.concatenate([[0.0], np.cumsum(p) / p.sum()])
    pos = np.minimum(np.interp(kin.uniform(0.3), knots, np.arange(len(knots))), len(p) - 1)
    steps = np.arange(len(palette))
    tone = np.stack([np.interp(pos, steps, palette[:, c]) for c in range(3)], axis=1)
    pale_tone = _PALE_SKIN[0] + (_PALE_SKIN[1] - _PALE_SKIN[0]) * kin.uniform(0.3)[:, None]
    return np.where(pale[:, None], pale_tone, tone)


def draw_identities_hard(
    ids: int, rng: np.random.Generator
) -> tuple[np.ndarray, FaceTraits, dict, np.ndarray, dict]:
    """The hard style's identities: attributes (ids, 40) int8 (0 where per-image),
    traits, per-image propensities, families (ids,), and the per-identity draws the
    per-image hair needs (``usual``: male, young, hair colour category).

    Shapes span a little more than the easy style's around the same means (the mean
    face still sits on the alignment template) and have more degrees of freedom; the
    attributes tied to a shape (Big_Nose, Narrow_Eyes, ...) decide its range as before.
    """
    family = draw_families(ids, rng)
    kin = _Kin(family, rng)
    u = kin.u

    male = kin.flag(_MALE_RATE, spread=0.0)  # a family is brothers or sisters
    has = {name: kin.flag(np.where(male, m, f)) for name, (m, f) in _ID_RATES.items()}
    young = has["Young"]

    bald = has["Bald"]
    style = np.where(bald, BALD, kin.choice(_style_p(male), spread=0.7))
    wave = _wave(style, kin.uniform(0.7), kin.uniform(0.7))
    bangs = has["Bangs"] & ~bald & (style != BUN)
    receding = has["Receding_Hairline"] & ~bald & ~bangs

    # The natural hair colour: the brows' and the beard's, and the usual head of hair.
    hair_cat = kin.choice(_hair_colour_p(male, young), spread=0.5)
    hair_rgb = np.clip(
        _HAIR_BASE[hair_cat] + rng.normal(0.0, 1.0, (ids, 3)) * _HAIR_JITTER[hair_cat, None],
        0,
        255,
    )
    blond = hair_cat == _HAIR_NAMES.index("Blond_Hair")
    brow_rgb = np.where(blond[:, None], 0.7, 0.85) * hair_rgb
    brow_rgb = np.where(bald[:, None], np.array([60.0, 44.0, 36.0]), brow_rgb)

    # A man's usual facial hair; draw_looks varies it per image.
    beard = male & kin.flag(_BEARD_RATE)
    goatee = male & kin.flag(_GOATEE_RATE)
    mustache = male & kin.flag(_MUSTACHE_RATE)
    sideburns = has["Sideburns"] & ~bald & male

    skin = _skin_tones(kin, has["Pale_Skin"])
    lip_rgb = skin + (np.array([178.0, 76.0, 80.0]) - skin) * u(0.35, 0.55)[:, None]
    eye_rgb = np.clip(
        _EYES[kin.choice(_EYES_P, spread=0.5)] + rng.normal(0.0, 8.0, (ids, 3)), 0, 255
    )

    chubby, oval = has["Chubby"], has["Oval_Face"]
    # Ranges about twice the easy style's for what does not move a landmark (outline,
    # eye size and shape, brows, nose wings, lips, ears), so that faces differ by
    # pixels, not fractions of one, in a 64-pixel crop; a third wider for the landmark
    # proportions, which alignment to a template has to absorb.
    face_w = np.where(oval, u(0.68, 0.75), u(0.67, 0.87)) + 0.02 * male + 0.06 * chubby
    jaw = np.where(oval, u(0.10, 0.16), u(0.0, 0.36)) + 0.08 * has["High_Cheekbones"]
    jaw = np.clip(jaw - 0.12 * chubby, 0.0, None)
    nose_len = u(0.15, 0.215) + 0.02 * has["Big_Nose"]
    lone = 1.0  # moles, freckles and their places: a person's own, not the family's
    traits = FaceTraits(
        face_w=face_w,
        jaw=jaw,
        eye_y=u(-0.05, 0.03),
        eye_dx=u(0.135, 0.172),
        eye_rx=u(0.044, 0.076),
        eye_open=np.where(has["Narrow_Eyes"], u(0.24, 0.34), u(0.38, 0.7)),
        brow_gap=u(0.045, 0.1),
        brow_thick=(np.where(has["Bushy_Eyebrows"], u(0.03, 0.046), u(0.01, 0.024)) + 0.004 * male),
        brow_tilt=u(-0.4, 0.4),
        brow_arch=np.where(has["Arched_Eyebrows"], u(0.03, 0.055), u(0.0, 0.02)),
        nose_len=nose_len,
        nose_w=np.where(has["Big_Nose"], u(0.09, 0.12), u(0.045, 0.085)),
        nose_tip=np.where(has["Pointy_Nose"], u(0.3, 0.5), u(0.65, 1.1)),
        nose_z=u(0.08, 0.14),
        mouth_drop=nose_len + u(0.11, 0.165),
        mouth_hw=u(0.105, 0.155),
        lip_thick=np.where(has["Big_Lips"], u(0.034, 0.05), u(0.015, 0.03)) - 0.003 * male,
        ear_size=u(0.75, 1.25),
        skin=skin,
        hair_rgb=hair_rgb,
        brow_rgb=brow_rgb,
        eye_rgb=eye_rgb,
        lip_rgb=lip_rgb,
        hair_style=style.astype(np.int8),
        hair_wave=wave.astype(np.int8),
        hair_volume=np.where(np.isin(style, [LONG, CURLY]), u(0.05, 0.1), u(0.025, 0.05)),
        hairline=np.where(receding, u(-0.40, -0.36), u(-0.34, -0.26)),
        part=np.where(kin.flag(0.5), -1.0, 1.0),
        bangs=bangs,
        receding=receding,
        beard=beard,
        goatee=goatee,
        mustache=mustache,
        sideburns=sideburns,
        chubby=chubby,
        double_chin=has["Double_Chin"],
        cheekbones=has["High_Cheekbones"],
        young=young,
        mark=kin.flag(0.35, lone),
        mark_x=u(-0.25, 0.25, lone),
        mark_y=u(-0.2, 0.3, lone),
        chin_pow=u(1.3, 4.0),
        temple=u(0.0, 0.15),
        eye_tilt=u(-0.2, 0.25),
        iris=u(0.75, 1.05),
        crease=np.where(kin.flag(0.5), u(1.35, 2.1), 0.0),
        brow_len=u(1.0, 1.7),
        brow_dx=u(-0.01, 0.035),
        brow_taper=u(0.1, 0.8),
        nose_bridge=u(0.008, 0.035),
        nostril=u(0.7, 1.4),
        lip_up=u(0.55, 1.1),
        lip_lo=u(0.8, 1.45),
        lip_bow=u(0.0, 0.016),
        mouth_sag=u(-0.006, 0.016),
        ear_dy=u(0.03, 0.11),
        ear_w=u(0.03, 0.06),
        mark2=kin.flag(0.25, lone),
        mark2_x=u(-0.28, 0.28, lone),
        mark2_y=u(-0.15, 0.35, lone),
        folds=~young | kin.flag(0.3),
        cleft=kin.flag(0.15),
        dimples=kin.flag(0.2),
        freckles=np.where(kin.flag(0.12), rng.integers(1, 2**31, ids), 0),
        contour=np.ones(ids, dtype=bool),
    )

    attrs = np.zeros((ids, len(ATTRIBUTES)), dtype=np.int8)

    def sign(flag: np.ndarray) -> np.ndarray:
        return np.where(flag, 1, -1).astype(np.int8)

    for name in _ID_RATES:
        attrs[:, _COL[name]] = sign(has[name])
    attrs[:, _COL["Male"]] = sign(male)
    attrs[:, _COL["Receding_Hairline"]] = sign(receding)
    attrs[:, _COL["Sideburns"]] = sign(sideburns)
    for name in LOOK_ATTRIBUTES:
        attrs[:, _COL[name]] = 0  # per image: draw_looks

    propensity = {}
    for name, (m, f, conc) in _IMG_RATES.items():
        mean, conc = np.where(male, m, f), conc * _HARD_CONCENTRATION
        propensity[name] = rng.beta(mean * conc, (1.0 - mean) * conc)
    # Stubble for any man (a beard drawn on the day hides it: make_population).
    propensity["5_o_Clock_Shadow"] = np.where(male, rng.beta(0.66, 1.34, ids), 0.0)
    usual = {"male": male, "young": young, "hair_cat": hair_cat}
    return attrs, traits, propensity, family, usual


def draw_looks(
    identity: np.ndarray, traits: FaceTraits, usual: dict, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The hard style's per-image look: Pose columns that replace the easy ones, and
    the hair attributes (name -> (N,) bool) that the drawn hair makes true.

    Hair and facial hair: sometimes the person's usual colour, style, texture and beard,
    more often anyone's (dyed, tied up, a new cut, shaved); bald men are mostly bald,
    and a few others shave their heads. Photo: exposure, colour cast, contrast,
    saturation and complexion vary more than in the easy style, so that skin and hair
    colours vary more between a person's photos than between people.
    """
    n = len(identity)
    male, young = usual["male"][identity], usual["young"][identity]
    own_style = traits.hair_style[identity].astype(np.int64)
    own_bald = own_style == BALD
    shaves = male & ~traits.receding[identity] & (rng.random(n) < _BALD_IF_NOT)
    bald = np.where(own_bald, rng.random(n) < _KEEP_BALD, shaves)
    keep_style = (rng.random(n) < _KEEP_HAIR_STYLE) & ~own_bald
    fresh_style = _inverse_cdf(rng.random(n), _style_p(male))
    style = np.where(bald, BALD, np.where(keep_style, own_style, fresh_style))
    keep_wave = keep_style & (rng.random(n) < _KEEP_WAVE)
    fresh_wave = _wave(style, rng.random(n), rng.random(n))
    wave = np.where(keep_wave, traits.hair_wave[identity], fresh_wave)
    wave = np.where(style == CURLY, WAVY, np.where(bald, NEITHER, wave))
    keep_colour = rng.random(n) < _KEEP_HAIR_COLOUR
    fresh = _inverse_cdf(rng.random(n), _hair_colour_p(male, young))
    cat = np.where(keep_colour, usual["hair_cat"][identity], fresh)
    shade = rng.uniform(0.8, 1.2, n)[:, None]
    hair_rgb = _HAIR_BASE[cat] * shade + rng.normal(0.0, 1.0, (n, 3)) * _HAIR_JITTER[cat, None]
    hair_rgb = np.where(bald[:, None], traits.hair_rgb[identity], np.clip(hair_rgb, 0, 255))
    facial = {}
    for name, rate in (
        ("beard", _BEARD_RATE),
        ("goatee", _GOATEE_RATE),
        ("mustache", _MUSTACHE_RATE),
    ):
        keep = rng.random(n) < _KEEP_FACIAL_HAIR
        fresh = rng.random(n) < rate
        facial[name] = male & np.where(keep, getattr(traits, name)[identity], fresh)
    usual_bangs = traits.bangs[identity]
    bangs = rng.random(n) < np.where(usual_bangs, _BANGS_IF_USUAL, _BANGS_IF_NOT)
    bangs &= ~bald & (style != BUN) & ~traits.receding[identity]
    part = np.where(rng.random(n) < _KEEP_PART, 1.0, -1.0) * traits.part[identity]
    # Today's hair volume follows today's style; hair_scale is relative to the person's.
    volume = np.where(
        np.isin(style, [LONG, CURLY]), rng.uniform(0.05, 0.1, n), rng.uniform(0.025, 0.05, n)
    )
    # Colour temperature (red against blue) and a green-magenta shift: the casts of
    # daylight, tungsten, shade and fluorescent light.
    warm, green = rng.normal(0.0, 0.08, n), rng.normal(0.0, 0.035, n)
    white_balance = np.clip(np.stack([1.0 + warm, 1.0 + green, 1.0 - warm], axis=1), 0.75, 1.3)
    look = {
        "hair_rgb": hair_rgb,
        "hair_style": style.astype(np.int8),
        "hair_wave": wave.astype(np.int8),
        "bangs": bangs,
        "part": part,
        "hair_scale": volume / traits.hair_volume[identity],
        **facial,
        "exposure": np.exp(rng.uniform(np.log(0.6), np.log(1.35), n)),
        "white_balance": white_balance,
        "gamma": np.clip(np.exp(rng.normal(0.0, 0.15, n)), 0.75, 1.35),
        # Side light and gradients as in the easy style: they shade the face unevenly,
        # which slows a recogniser down more than they hide colour from a probe.
        "light_strength": rng.uniform(0.0, 0.6, n),
        "shade_alpha": np.where(rng.random(n) < 0.5, 0.0, rng.uniform(20.0, 100.0, n)),
        "tint": rng.normal(0.0, 6.0, (n, 3)),
        "skin_gain": np.exp(rng.normal(0.0, 0.1, n)),
        # Some photos are black and white, the others more or less saturated.
        "saturation": np.where(
            rng.random(n) < _GREY_PHOTOS, rng.uniform(0.0, 0.15, n), rng.uniform(0.7, 1.2, n)
        ),
        "noise": rng.uniform(1.0, 6.0, n),
        "shadow_rgb": _pick(rng, _SHADOWS, None, n, 12.0),
    }
    hair_attrs = {name: (cat == k) & ~bald for k, name in enumerate(_HAIR_NAMES[:4])}
    hair_attrs["Straight_Hair"] = wave == STRAIGHT
    hair_attrs["Wavy_Hair"] = wave == WAVY
    hair_attrs["Bangs"] = bangs
    hair_attrs["Bald"] = bald
    hair_attrs["Goatee"] = facial["goatee"]
    hair_attrs["Mustache"] = facial["mustache"]
    hair_attrs["No_Beard"] = ~(facial["beard"] | facial["goatee"] | facial["mustache"])
    return look, hair_attrs


def draw_poses(
    identity: np.ndarray,
    traits: FaceTraits,
    smiling: np.ndarray,
    mouth_open: np.ndarray,
    seed: int,
    max_side: int,
    rng: np.random.Generator,
) -> tuple[Pose, Layout]:
    """Per-image size, placement, pose and photo settings, and the resulting ground truth."""
    n = len(identity)
    ids = len(traits)

    def u(lo: float, hi: float, size: int | tuple[int, ...] = n) -> np.ndarray:
        return rng.uniform(lo, hi, size)

    def rgb(lo: float = 20, hi: float = 236) -> np.ndarray:
        return rng.uniform(lo, hi, (n, 3))

    long_side = u(0.6, 1.0) * max_side
    aspect = np.exp(u(np.log(0.6), np.log(1.4)))  # width / height
    width = np.rint(long_side * np.minimum(aspect, 1.0)).astype(np.int64)
    height = np.rint(long_side * np.minimum(1.0 / aspect, 1.0)).astype(np.int64)

    roll = np.deg2rad(np.clip(rng.normal(0.0, 10.0, n), -30.0, 30.0))
    yaw = np.deg2rad(np.clip(rng.normal(0.0, 15.0, n), -35.0, 35.0))
    pitch = np.deg2rad(np.clip(rng.normal(0.0, 8.0, n), -20.0, 20.0))
    box_jitter = u(0.97, 1.12, (n, 4))

    # Face size: each identity is mostly photographed near or far (CelebA's small faces
    # cluster by person: event photos vs portraits), so dropping small boxes removes
    # some identities wholesale and leaves others nearly whole.
    far = _rng(seed, 9).random(ids) < 0.3
    mu = np.where(far, np.log(0.22), np.log(0.58))[identity]
    box_frac = np.clip(np.exp(mu + rng.normal(0.0, 0.12, n)), 0.12, 0.62)

    cols = {k: v[identity] for k, v in traits.columns().items()}
    # Box size per pixel of head height, measured on a big face so that the fixed pixel
    # margin around the landmarks does not count.
    _, big_box = geometry.relative_layout(
        cols, roll, yaw, pitch, np.full(n, 1000.0), box_jitter, smiling, mouth_open
    )
    box_h_unit = (big_box[:, 3] - big_box[:, 1]) / 1000.0
    box_w_unit = (big_box[:, 2] - big_box[:, 0]) / 1000.0
    # Box height as a share of the image height; neither side of the box over ~60 % of
    # the image's.
    face_h = box_frac * height / box_h_unit
    face_h = np.minimum(face_h, 0.62 * width / box_w_unit)
    face_h = np.maximum(face_h, 40.0)
    rel, box = geometry.relative_layout(
        cols, roll, yaw, pitch, face_h, box_jitter, smiling, mouth_open
    )
    # The pixel margin around the landmarks can grow a tiny box past its image; shrink
    # those faces until every box fits (rarely more than one round).
    for _ in range(20):
        too_big = ((box[:, 2] - box[:, 0]) > width - 2) | ((box[:, 3] - box[:, 1]) > height - 2)
        if not too_big.any():
            break
        face_h = np.where(too_big, face_h * 0.9, face_h)
        rel, box = geometry.relative_layout(
            cols, roll, yaw, pitch, face_h, box_jitter, smiling, mouth_open
        )
    # Head centre: anywhere that keeps the whole box inside the image.
    cx = -box[:, 0] + 1.0 + u(0.0, 1.0) * np.maximum(width - 2.0 - (box[:, 2] - box[:, 0]), 0.0)
    cy = -box[:, 1] + 1.0 + u(0.0, 1.0) * np.maximum(height - 2.0 - (box[:, 3] - box[:, 1]), 0.0)
    landmarks, bbox = geometry.place(rel, box, cx, cy)
    matrix = geometry.similarity_to_template(landmarks)

    pose = Pose(
        index=np.arange(n, dtype=np.int64),
        seed=np.full(n, seed, dtype=np.int64),
        width=width,
        height=height,
        face_h=face_h,
        cx=cx,
        cy=cy,
        roll=roll,
        yaw=yaw,
        pitch=pitch,
        box_jitter=box_jitter,
        quality=rng.integers(60, 96, n),
        blur=np.maximum(1.6, face_h * u(0.02, 0.04)),
        light_angle=u(0.0, 2 * np.pi),
        light_strength=u(0.0, 0.6),
        # Light from one side darkens the other half of the face; half the photos
        # have none.
        shade_side=np.where(rng.random(n) < 0.5, -1.0, 1.0),
        shade_alpha=np.where(rng.random(n) < 0.5, 0.0, u(20.0, 100.0)),
        exposure=u(0.82, 1.12),
        # Colour casts and contrast differ per photo, so that an identity's skin and
        # hair colours vary more between its photos than between similar people.
        white_balance=np.clip(rng.normal(1.0, 0.07, (n, 3)), 0.8, 1.2),
        gamma=np.exp(rng.normal(0.0, 0.12, n)),
        hair_scale=u(0.75, 1.25),
        hair_length=u(0.7, 1.2),
        brow_raise=u(-0.008, 0.02),
        eye_squint=u(0.8, 1.1),
        noise=u(1.0, 5.0),
        bg0=rgb(),
        bg1=rgb(),
        clothes=rgb(15, 240),
        frame_rgb=_pick(rng, _FRAMES, None, n, 10.0),
        sunglasses=rng.random(n) < 0.25,
        hat_rgb=rgb(),
        hat_style=rng.integers(0, 3, n),
        lipstick_rgb=_pick(rng, _LIPSTICK, None, n, 10.0),
        jewel_rgb=_pick(rng, _JEWELS, None, n, 6.0),
        tie_rgb=rgb(),
        # The identity's own hair, no tint, one eye shadow: the easy style's look. The
        # hard style replaces these (make_population).
        hair_rgb=traits.hair_rgb[identity],
        hair_style=traits.hair_style[identity],
        hair_wave=traits.hair_wave[identity],
        bangs=traits.bangs[identity],
        part=traits.part[identity],
        beard=traits.beard[identity],
        goatee=traits.goatee[identity],
        mustache=traits.mustache[identity],
        tint=np.zeros((n, 3)),
        saturation=np.ones(n),
        skin_gain=np.ones(n),
        shadow_rgb=np.broadcast_to(_SHADOW_EASY, (n, 3)).copy(),
    )
    layout = Layout(
        landmarks=landmarks,
        bbox=bbox,
        aligned_matrix=matrix,
        aligned_landmarks=geometry.aligned_landmarks(matrix, landmarks),
    )
    return pose, layout


def make_population(
    ids: int,
    seed: int = 0,
    images: int | None = None,
    max_side: int = 500,
    style: str = DEFAULT_STYLE,
) -> Population:
    """Draw a complete synthetic population (no pixels). See :class:`Population`, and
    the module's doc for the styles.

    ``synthesize`` checks its arguments with friendlier messages; this only refuses
    what would make no population at all.
    """
    check_style(style)
    total = default_image_count(ids) if images is None else images
    if ids < 1 or not ids <= total <= MAX_IMAGES_PER_IDENTITY * ids:
        raise ValueError(f"cannot give {ids} identities {total} images (1 to 35 each)")
    counts = images_per_identity(ids, total, _rng(seed, 1))
    identity_partition = split_identities(counts, _rng(seed, 2))
    identity = order_images(counts, identity_partition, _rng(seed, 3))
    family = usual = None
    if style == "easy":
        id_attrs, traits, propensity = draw_identities(ids, _rng(seed, 4))
    else:
        id_attrs, traits, propensity, family, usual = draw_identities_hard(ids, _rng(seed, 4))

    n = len(identity)
    rng = _rng(seed, 5)
    attrs = id_attrs[identity]
    for name in IMAGE_ATTRIBUTES:
        if name == "Blurry":
            on = rng.random(n) < _BLURRY_RATE
        elif name == "Mouth_Slightly_Open":
            continue  # depends on Smiling, below
        else:
            on = rng.random(n) < propensity[name][identity]
        attrs[:, _COL[name]] = np.where(on, 1, -1)
    smiling = attrs[:, _COL["Smiling"]] > 0
    mouth_open = rng.random(n) < np.where(smiling, _OPEN_IF_SMILING, _OPEN_IF_NOT)
    attrs[:, _COL["Mouth_Slightly_Open"]] = np.where(mouth_open, 1, -1)

    poses, layout = draw_poses(identity, traits, smiling, mouth_open, seed, max_side, _rng(seed, 6))
    if usual is not None:
        # Hair and photo settings are drawn apart (stream 7), after the poses, so the
        # two styles share sizes, placements and poses draw for draw.
        look, hair_attrs = draw_looks(identity, traits, usual, _rng(seed, 7))
        poses = replace(poses, **look)
        for name, on in hair_attrs.items():
            attrs[:, _COL[name]] = np.where(on, 1, -1)
        # A full beard covers the stubble; the attribute says what is drawn.
        attrs[look["beard"], _COL["5_o_Clock_Shadow"]] = -1
    return Population(
        seed=seed,
        counts=counts,
        identity_partition=identity_partition,
        traits=traits,
        identity=identity,
        partition=identity_partition[identity],
        attributes=attrs,
        poses=poses,
        layout=layout,
        style=style,
        family=family,
    )

"""SynthPed identities: a person's fixed appearance, and the per-view PA-100K labels.

An `Identity` holds everything that stays the same across a person's images (clothes,
colours, accessories, body proportions, fine details such as the stripe period or the logo
position). What one image shows depends on the view (front / side / back) and on whether the
feet are occluded; `visible_features` and `attribute_vector` apply exactly those rules, and
the renderer and the caption generator use the same rules, so labels, pixels and captions agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES

RGB = tuple[int, int, int]

#: Named clothing colours, most common first (high difficulty keeps only the first few).
COLORS: dict[str, RGB] = {
    "black": (28, 28, 32), "white": (232, 232, 228), "grey": (128, 128, 130),
    "blue": (40, 75, 185), "red": (195, 35, 40), "brown": (115, 72, 40),
    "green": (45, 135, 60), "beige": (212, 192, 150), "pink": (232, 135, 172),
    "yellow": (228, 198, 45), "purple": (118, 52, 148), "orange": (232, 122, 35),
}
HAIR_COLORS: dict[str, RGB] = {
    "black": (22, 20, 20), "brown": (92, 58, 32), "blond": (205, 170, 95), "grey": (165, 165, 165),
}
SKIN_TONES: tuple[RGB, ...] = ((238, 200, 170), (214, 170, 130), (170, 120, 85), (110, 75, 50))

VIEWS: tuple[str, ...] = ("front", "side", "back")
AGE_GROUPS: tuple[str, ...] = ("18-60", "less18", "over60")
UPPER_TYPES: tuple[str, ...] = ("short_sleeve", "long_sleeve", "long_coat")
UPPER_PATTERNS: tuple[str, ...] = ("plain", "stripes", "logo", "plaid", "splice")
LOWER_TYPES: tuple[str, ...] = ("trousers", "shorts", "skirt")
LOWER_PATTERNS: tuple[str, ...] = ("plain", "stripe", "pattern")
BAGS: tuple[str, ...] = ("none", "backpack", "handbag", "shoulder_bag")
LOGO_SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

_INDEX = {name: i for i, name in enumerate(PA100K_ATTRIBUTES)}

#: Probability that a clothing / age / bag choice ignores the difficulty's shorter list, so
#: that every category (hence every PA-100K attribute) keeps positives at any difficulty.
RARE_CATEGORY_PROB = 0.2


@dataclasses.dataclass(frozen=True)
class Identity:
    """The fixed appearance of one synthetic pedestrian.

    Colours are stored twice: the caption name (e.g. ``"red"``) and the exact RGB, which is
    the named colour plus a per-identity offset, so identities sharing a colour name still
    differ in fine detail.

    Attributes:
        uid: Global identity number, unique within one generated world.
        female: Gender.
        age: ``"less18"``, ``"18-60"`` or ``"over60"``.
        height: Body height as a fraction of the crop height (children are shorter).
        width: Body width factor (1.0 = average build).
        head_size: Head radius as a fraction of the body height.
        skin: Skin RGB.
        hair_long: Long (shoulder length) hair or short hair.
        hair_color: Hair colour name (key of `HAIR_COLORS`).
        hair_rgb: Exact hair RGB.
        upper_type: ``"short_sleeve"``, ``"long_sleeve"`` or ``"long_coat"``.
        upper_color: Upper-body colour name; ``upper_rgb`` the exact RGB.
        upper_pattern: ``"plain"``, ``"stripes"``, ``"logo"``, ``"plaid"`` or ``"splice"``.
        pattern_color: Colour name of the stripes / logo / plaid lines / second splice half;
            ``pattern_rgb`` the exact RGB.
        stripe_period: Stripe / plaid period as a fraction of the body height.
        logo_shape: ``"circle"``, ``"square"`` or ``"triangle"``.
        logo_pos: Logo centre within the torso, as fractions (x, y) of its width and height.
        splice_ratio: Height fraction of the torso where the two splice colours meet.
        lower_type: ``"trousers"``, ``"shorts"`` or ``"skirt"`` (skirt or dress).
        lower_color: Lower-body colour name; ``lower_rgb`` the exact RGB.
        lower_pattern: ``"plain"``, ``"stripe"`` (side stripe or hem band) or ``"pattern"`` (dots).
        lower_pattern_color: Colour name of the lower stripe / dots; ``lower_pattern_rgb`` RGB.
        boots: Boots rather than shoes.
        shoe_color: Shoe colour name; ``shoe_rgb`` the exact RGB.
        hat: Wears a hat; ``hat_color`` / ``hat_rgb`` its colour.
        glasses: Wears glasses.
        bag: ``"none"``, ``"backpack"``, ``"handbag"`` or ``"shoulder_bag"``.
        bag_color: Bag colour name; ``bag_rgb`` the exact RGB.
        holding: Holds an object in front of the body; ``held_color`` / ``held_rgb`` its colour.
        stride: Typical step length (gait), a fraction of the body height.
    """

    uid: int
    female: bool
    age: str
    height: float
    width: float
    head_size: float
    skin: RGB
    hair_long: bool
    hair_color: str
    hair_rgb: RGB
    upper_type: str
    upper_color: str
    upper_rgb: RGB
    upper_pattern: str
    pattern_color: str
    pattern_rgb: RGB
    stripe_period: float
    logo_shape: str
    logo_pos: tuple[float, float]
    splice_ratio: float
    lower_type: str
    lower_color: str
    lower_rgb: RGB
    lower_pattern: str
    lower_pattern_color: str
    lower_pattern_rgb: RGB
    boots: bool
    shoe_color: str
    shoe_rgb: RGB
    hat: bool
    hat_color: str
    hat_rgb: RGB
    glasses: bool
    bag: str
    bag_color: str
    bag_rgb: RGB
    holding: bool
    held_color: str
    held_rgb: RGB
    stride: float


def _vocab_size(n: int, difficulty: float, minimum: int) -> int:
    # Linear shrink from the full vocabulary (difficulty 0) to `minimum` (difficulty 1).
    return max(minimum, round(n - difficulty * (n - minimum)))


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str], k: int) -> str:
    return options[int(rng.integers(k))]


def _category(rng: np.random.Generator, options: tuple[str, ...], k: int) -> str:
    # Difficulty makes the first k options common, but every option stays possible: each is
    # a PA-100K attribute, and one never drawn has no positive to learn or evaluate.
    if rng.random() < RARE_CATEGORY_PROB:
        return _choice(rng, options, len(options))
    return _choice(rng, options, k)


def _jitter(rgb: RGB, rng: np.random.Generator, scale: float) -> RGB:
    # Fine per-identity hue: the colour keeps its name but the exact RGB is the identity's own.
    values = np.clip(np.asarray(rgb) + rng.normal(0.0, scale, 3), 0, 255)
    return tuple(int(v) for v in values)


def sample_identity(rng: np.random.Generator, difficulty: float = 0.5, uid: int = 0) -> Identity:
    """Draws one identity.

    At ``difficulty`` 0 colours and clothing types come from the full vocabulary and
    accessories are frequent, so most identities differ in coarse attributes. Towards 1 the
    colour palette shrinks to 3 names and each categorical choice to 2 common options, so many
    identities share most attributes and differ only in fine detail (exact RGB, stripe period,
    logo position and shape, shoe colour, body proportions, gait). The other options of a
    categorical choice stay possible (probability `RARE_CATEGORY_PROB`), so every PA-100K
    attribute has positives at every difficulty.

    Args:
        rng: NumPy random generator (consumed deterministically).
        difficulty: In [0, 1].
        uid: The identity number stored in the result.

    Returns:
        The sampled `Identity`.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    d = float(difficulty)
    colors = list(COLORS)[: _vocab_size(len(COLORS), d, 3)]

    def color() -> tuple[str, RGB]:
        name = _choice(rng, colors, len(colors))
        return name, _jitter(COLORS[name], rng, 10.0 + 8.0 * d)

    # The draws happen in this order (body, clothes, accessories, fine detail): SynthPed's
    # output for a seed depends on it.
    body = _sample_body(rng, d)
    clothes = _sample_clothes(rng, d, body["female"], colors, color)
    accessories = _sample_accessories(rng, d, color)
    detail = {"stripe_period": float(rng.uniform(0.035, 0.07)),
              "logo_shape": _choice(rng, LOGO_SHAPES, 3),
              "logo_pos": (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.25, 0.55))),
              "splice_ratio": float(rng.uniform(0.35, 0.65))}
    return Identity(uid=int(uid), **body, **clothes, **accessories, **detail,
                    stride=float(rng.uniform(0.05, 0.12)))


def _sample_body(rng: np.random.Generator, d: float) -> dict:
    """Sex, age, proportions, skin and hair."""
    female = bool(rng.random() < 0.5)
    age = _category(rng, AGE_GROUPS, _vocab_size(3, d, 2)) if rng.random() < 0.35 else "18-60"
    if age == "less18":
        height, head = rng.uniform(0.74, 0.84), rng.uniform(0.078, 0.09)
    elif age == "over60":
        height, head = rng.uniform(0.84, 0.92), rng.uniform(0.064, 0.072)
    else:
        height, head = rng.uniform(0.88, 0.98), rng.uniform(0.06, 0.07)
    width = rng.uniform(0.85, 1.15) * (0.92 if female else 1.0)
    skin = _jitter(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], rng, 6.0)
    hair_long = bool(rng.random() < (0.75 if female else 0.1))
    hair_names = ["grey", "black"] if age == "over60" else ["black", "brown", "blond"]
    hair_color = hair_names[int(rng.integers(_vocab_size(len(hair_names), d, 1)))]
    return {"female": female, "age": age, "height": float(height), "width": float(width),
            "head_size": float(head), "skin": skin, "hair_long": hair_long,
            "hair_color": hair_color, "hair_rgb": _jitter(HAIR_COLORS[hair_color], rng, 8.0)}


def _other_color(rng: np.random.Generator, colors: list[str], name: str, rgb: RGB,
                 garment: str) -> tuple[str, RGB]:
    """A pattern colour: the next name when it equals the garment's (it would not show)."""
    if name != garment:
        return name, rgb
    name = colors[(colors.index(garment) + 1) % len(colors)]
    return name, _jitter(COLORS[name], rng, 10.0)


def _sample_clothes(rng: np.random.Generator, d: float, female: bool, colors: list[str],
                    color: Callable[[], tuple[str, RGB]]) -> dict:
    """Upper and lower garments with their patterns, and the shoes."""
    upper_type = _category(rng, UPPER_TYPES, _vocab_size(3, d, 2))
    upper_color, upper_rgb = color()
    upper_pattern = _category(rng, UPPER_PATTERNS, _vocab_size(5, d, 2))
    pattern_color, pattern_rgb = _other_color(rng, colors, *color(), upper_color)
    lower_types = LOWER_TYPES if female else LOWER_TYPES[:2]
    lower_type = _category(rng, lower_types, _vocab_size(len(lower_types), d, 1))
    lower_color, lower_rgb = color()
    lower_pattern = "plain"
    if rng.random() < 0.4:
        lower_pattern = _category(rng, LOWER_PATTERNS, _vocab_size(3, d, 2))
    lower_pattern_color, lower_pattern_rgb = _other_color(rng, colors, *color(), lower_color)
    boots = bool(rng.random() < (0.25 if female else 0.12))
    shoe_color, shoe_rgb = color()
    return {"upper_type": upper_type, "upper_color": upper_color, "upper_rgb": upper_rgb,
            "upper_pattern": upper_pattern, "pattern_color": pattern_color,
            "pattern_rgb": pattern_rgb, "lower_type": lower_type, "lower_color": lower_color,
            "lower_rgb": lower_rgb, "lower_pattern": lower_pattern,
            "lower_pattern_color": lower_pattern_color, "lower_pattern_rgb": lower_pattern_rgb,
            "boots": boots, "shoe_color": shoe_color, "shoe_rgb": shoe_rgb}


def _sample_accessories(rng: np.random.Generator, d: float,
                        color: Callable[[], tuple[str, RGB]]) -> dict:
    """Hat, glasses, bag and a held object, rarer at higher difficulty."""
    accessory_p = 0.3 * (1.0 - 0.5 * d)
    hat = bool(rng.random() < accessory_p)
    hat_color, hat_rgb = color()
    glasses = bool(rng.random() < accessory_p)
    bag = _category(rng, BAGS, _vocab_size(4, d, 2)) if rng.random() < 0.7 else "none"
    bag_color, bag_rgb = color()
    holding = bool(rng.random() < accessory_p)
    held_color, held_rgb = color()
    return {"hat": hat, "hat_color": hat_color, "hat_rgb": hat_rgb, "glasses": glasses,
            "bag": bag, "bag_color": bag_color, "bag_rgb": bag_rgb, "holding": holding,
            "held_color": held_color, "held_rgb": held_rgb}


def visible_features(identity: Identity, view: str, feet_visible: bool = True) -> dict[str, bool]:
    """What an image of ``identity`` seen from ``view`` shows (shared by render and captions).

    Args:
        identity: The person.
        view: ``"front"``, ``"side"`` or ``"back"``.
        feet_visible: False when an occluder hides the feet and shoes.

    Returns:
        Flags: ``face`` (face, glasses and logo side), ``glasses``, ``logo``, ``backpack``,
        ``handbag``, ``shoulder_bag``, ``holding``, ``shoes``.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    front_or_side = view in ("front", "side")
    return {
        "face": front_or_side,
        "glasses": identity.glasses and front_or_side,
        "logo": identity.upper_pattern == "logo" and front_or_side,
        # From the front only the straps would show, so a backpack counts as unseen there.
        "backpack": identity.bag == "backpack" and view in ("side", "back"),
        "handbag": identity.bag == "handbag",
        "shoulder_bag": identity.bag == "shoulder_bag",
        # The body hides a held object from the back.
        "holding": identity.holding and front_or_side,
        "shoes": feet_visible,
    }


def attribute_vector(identity: Identity, view: str, feet_visible: bool = True) -> np.ndarray:
    """The PA-100K label vector of one image (order of `PA100K_ATTRIBUTES`).

    An attribute the image does not show (glasses or a logo from the back, a backpack from
    the front, an object held in front seen from the back, boots under an occluder) is 0,
    consistent with the image's captions.

    Args:
        identity: The person.
        view: ``"front"``, ``"side"`` or ``"back"``.
        feet_visible: False when an occluder hides the feet.

    Returns:
        ``int8`` array of shape (26,) with values 0/1.
    """
    seen = visible_features(identity, view, feet_visible)
    labels = np.zeros(len(PA100K_ATTRIBUTES), np.int8)
    on = {
        "Female": identity.female,
        "AgeOver60": identity.age == "over60",
        "Age18-60": identity.age == "18-60",
        "AgeLess18": identity.age == "less18",
        "Front": view == "front", "Side": view == "side", "Back": view == "back",
        "Hat": identity.hat,
        "Glasses": seen["glasses"],
        "HandBag": seen["handbag"],
        "ShoulderBag": seen["shoulder_bag"],
        "Backpack": seen["backpack"],
        "HoldObjectsInFront": seen["holding"],
        "ShortSleeve": identity.upper_type == "short_sleeve",
        # A long coat has long sleeves too.
        "LongSleeve": identity.upper_type in ("long_sleeve", "long_coat"),
        "UpperStride": identity.upper_pattern == "stripes",
        "UpperLogo": seen["logo"],
        "UpperPlaid": identity.upper_pattern == "plaid",
        "UpperSplice": identity.upper_pattern == "splice",
        "LowerStripe": identity.lower_pattern == "stripe",
        "LowerPattern": identity.lower_pattern == "pattern",
        "LongCoat": identity.upper_type == "long_coat",
        "Trousers": identity.lower_type == "trousers",
        "Shorts": identity.lower_type == "shorts",
        "Skirt&Dress": identity.lower_type == "skirt",
        "boots": identity.boots and seen["shoes"],
    }
    for name, value in on.items():
        labels[_INDEX[name]] = 1 if value else 0
    return labels

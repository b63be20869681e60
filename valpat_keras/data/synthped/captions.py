"""Captions for SynthPed images, generated from what the image shows.

Each caption is assembled from the identity and the image's view (via `visible_features`,
the same rule the renderer and `attribute_vector` use), with several sentence templates and
synonyms, so a caption never mentions a backpack seen from the front, glasses seen from the
back or shoes hidden by an occluder. Randomness comes only from the generator passed in, so
captions are deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from valpat_keras.data.synthped.identity import Identity, visible_features

__all__ = ["ATTRIBUTE_WORDS", "describe"]

#: Words that appear in a caption iff the PA-100K attribute is 1 for the image (whole-word,
#: case-insensitive). Used by the tests and handy for checking caption/label agreement.
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    "Hat": ("hat", "cap"),
    "Glasses": ("glasses",),
    "HandBag": ("handbag", "purse"),
    "ShoulderBag": ("shoulder bag", "messenger bag", "satchel"),
    "Backpack": ("backpack", "rucksack"),
    "HoldObjectsInFront": ("holding", "holds"),
    "UpperLogo": ("logo",),
    "UpperPlaid": ("plaid", "checkered"),
    "LongCoat": ("coat", "overcoat"),
    "Trousers": ("trousers", "pants"),
    "Shorts": ("shorts",),
    "Skirt&Dress": ("skirt", "dress"),
    "boots": ("boots",),
}

_SUBJECTS = {
    (True, "less18"): ("girl", "young girl"),
    (True, "18-60"): ("woman", "lady", "female pedestrian"),
    (True, "over60"): ("elderly woman", "old lady", "old woman"),
    (False, "less18"): ("boy", "young boy"),
    (False, "18-60"): ("man", "guy", "male pedestrian"),
    (False, "over60"): ("elderly man", "old man", "older gentleman"),
}
_UPPER = {
    "short_sleeve": ("{c} short-sleeved top", "{c} T-shirt", "{c} short-sleeved shirt"),
    "long_sleeve": ("{c} long-sleeved shirt", "{c} sweater", "{c} long-sleeved top",
                    "{c} jacket"),
    "long_coat": ("{c} long coat", "long {c} overcoat", "{c} knee-length coat"),
}
_UPPER_PATTERN = {
    "stripes": (" with {p} stripes", " with horizontal {p} stripes"),
    "logo": (" with a {p} logo", " with a small {p} logo on the chest"),
    "plaid": (" with a {p} plaid pattern", " in a {p} checkered pattern"),
    "splice": (" with a {p} lower half", " that turns {p} towards the waist"),
}
_LOWER = {
    "trousers": ("{c} trousers", "{c} pants", "a pair of {c} trousers"),
    "shorts": ("{c} shorts", "a pair of {c} shorts"),
    "skirt": ("a {c} skirt", "a {c} dress"),
}
_LOWER_PATTERN = {
    ("stripe", False): (" with a {p} stripe down the side", " with {p} side stripes"),
    ("stripe", True): (" with a {p} band at the hem", " with a {p} stripe along the hem"),
    ("pattern", False): (" with {p} dots", " with a {p} dotted pattern"),
    ("pattern", True): (" with {p} dots", " with a {p} dotted pattern"),
}
_SHOES = ("{c} shoes", "{c} sneakers", "a pair of {c} shoes")
_BOOTS = ("{c} boots", "a pair of {c} boots")
_VIEW = {
    "front": (" facing the camera", " walking towards the camera"),
    "side": (" seen from the side", " walking sideways"),
    "back": (" seen from behind", " walking away from the camera"),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    if phrase.startswith(("a ", "an ", "a pair")):
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def describe(identity: Identity, view: str, rng: np.random.Generator, num_captions: int = 2,
             feet_visible: bool = True) -> list[str]:
    """Writes ``num_captions`` different captions of one image.

    Args:
        identity: The person.
        view: ``"front"``, ``"side"`` or ``"back"``.
        rng: NumPy random generator (templates and synonyms).
        num_captions: How many captions.
        feet_visible: False when an occluder hides the shoes (they are then not mentioned).

    Returns:
        The captions, e.g. ``"A woman with long black hair wears a red short-sleeved top with
        a white logo, blue trousers and white shoes. She carries a black backpack."``.
    """
    captions: list[str] = []
    templates = rng.permutation(4)
    for k in range(num_captions):
        captions.append(_caption(identity, view, rng, int(templates[k % 4]), feet_visible))
    return captions


def _caption(p: Identity, view: str, rng: np.random.Generator, template: int,
             feet_visible: bool) -> str:
    # The random draws happen in this order (subject, clothes, view, extras, their order):
    # SynthPed's captions for a seed depend on it.
    seen = visible_features(p, view, feet_visible)
    he = "she" if p.female else "he"
    his = "her" if p.female else "his"
    noun = _pick(rng, _SUBJECTS[(p.female, p.age)])
    # Short hair under a hat is hidden; long hair still shows.
    hair = None
    if p.hair_long or not p.hat:
        hair = f"{'long' if p.hair_long else 'short'} {p.hair_color} hair"
    upper, lower, shoes = _clothes(p, seen, rng)
    view_phrase = _pick(rng, _VIEW[view]) if rng.random() < 0.5 else ""
    head = _head(p, template, noun, hair, (upper, lower, shoes), view_phrase, he, his)
    extras = _extras(p, seen, rng)
    order = rng.permutation(len(extras))
    text = [_sentence(head)] + [
        _sentence(extras[i].replace("{he}", he).replace("{his}", his)) for i in order]
    return " ".join(text)


def _clothes(p: Identity, seen: dict[str, bool], rng: np.random.Generator
             ) -> tuple[str, str, str | None]:
    """The upper garment (with its article), the lower garment and the shoes if visible."""
    upper = _pick(rng, _UPPER[p.upper_type]).format(c=p.upper_color)
    pattern = p.upper_pattern
    if pattern in ("stripes", "plaid", "splice") or (pattern == "logo" and seen["logo"]):
        upper += _pick(rng, _UPPER_PATTERN[pattern]).format(p=p.pattern_color)
    lower = _pick(rng, _LOWER[p.lower_type]).format(c=p.lower_color)
    if p.lower_pattern != "plain":
        key = (p.lower_pattern, p.lower_type == "skirt")
        lower += _pick(rng, _LOWER_PATTERN[key]).format(p=p.lower_pattern_color)
    shoes = None
    if seen["shoes"]:
        shoes = _pick(rng, _BOOTS if p.boots else _SHOES).format(c=p.shoe_color)
    return _article(upper), lower, shoes


def _head(p: Identity, template: int, noun: str, hair: str | None,
          garments: tuple[str, str, str | None], view_phrase: str, he: str, his: str) -> str:
    """The first sentence (no random draws): who, hair and clothes in one of four templates."""
    upper, lower, shoes = garments
    subject = _article(noun)
    clothes = [upper, lower] + ([shoes] if shoes else [])
    if template == 0:
        return f"{subject}{' with ' + hair if hair else ''} wears {_join(clothes)}."
    if template == 1:
        return (f"{subject}{view_phrase}{' with ' + hair if hair else ''} is wearing "
                f"{_join(clothes)}.")
    if template == 2:
        hair_part = f"has {hair} and " if hair else ""
        return f"this {noun} {hair_part}is dressed in {_join(clothes)}."
    head = f"{subject} in {_join([upper, lower])}{view_phrase}."
    if shoes:
        head += f" {_sentence(he)} has {shoes} on."
    if hair:
        length = "long" if p.hair_long else "short"
        head += f" {_sentence(his)} hair is {length} and {p.hair_color}."
    return head


def _extras(p: Identity, seen: dict[str, bool], rng: np.random.Generator) -> list[str]:
    """Sentences on glasses, hat, bag and a held object ({he}/{his} still to fill in)."""
    extras = []
    if seen["glasses"]:
        extras.append(_pick(rng, ("{he} wears glasses.", "{he} has glasses on.",
                                  "{he} is wearing a pair of glasses.")))
    if p.hat:
        extras.append(_pick(rng, ("{he} wears a {c} hat.", "{he} has a {c} cap on {his} head.",
                                  "a {c} hat covers {his} head."))
                      .replace("{c}", p.hat_color))
    bag = None
    if seen["backpack"]:
        bag = ("{he} carries a {c} backpack.", "{he} has a {c} rucksack on {his} back.")
    elif seen["handbag"]:
        bag = ("{he} carries a {c} handbag.", "a {c} purse hangs from {his} hand.")
    elif seen["shoulder_bag"]:
        bag = ("{he} has a {c} shoulder bag.",
               "{he} carries a {c} messenger bag over {his} shoulder.")
    if bag:
        extras.append(_pick(rng, bag).replace("{c}", p.bag_color))
    if seen["holding"]:
        extras.append(_pick(rng, ("{he} is holding a {c} box in front of {his} body.",
                                  "{he} holds something {c} in front of {his} chest."))
                      .replace("{c}", p.held_color))
    return extras

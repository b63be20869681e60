"""Attribute vocabularies of the public pedestrian attribute datasets, and name checks."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["KNOWN_ATTRIBUTES", "PA100K_ATTRIBUTES", "PETA_EVAL_ATTRIBUTES", "closest_names",
           "unknown_attribute"]

#: The 26 PA-100K attributes, in annotation order.
PA100K_ATTRIBUTES: tuple[str, ...] = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat",
    "Glasses", "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve",
    "LongSleeve", "UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice", "LowerStripe",
    "LowerPattern", "LongCoat", "Trousers", "Shorts", "Skirt&Dress", "boots",
)

#: The 35 evaluated PETA attributes (the first 35 of its 105).
PETA_EVAL_ATTRIBUTES: tuple[str, ...] = (
    "personalLess30", "personalLess45", "personalLess60", "personalLarger60",
    "carryingBackpack", "carryingOther", "lowerBodyCasual", "upperBodyCasual",
    "lowerBodyFormal", "upperBodyFormal", "accessoryHat", "upperBodyJacket", "lowerBodyJeans",
    "footwearLeatherShoes", "upperBodyLogo", "hairLong", "personalMale",
    "carryingMessengerBag", "accessoryMuffler", "accessoryNothing", "carryingNothing",
    "upperBodyPlaid", "carryingPlasticBags", "footwearSandals", "footwearShoes",
    "lowerBodyShorts", "upperBodyShortSleeve", "lowerBodyShortSkirt", "footwearSneaker",
    "upperBodyThinStripes", "accessorySunglasses", "lowerBodyTrousers", "upperBodyTshirt",
    "upperBodyOther", "upperBodyVNeck",
)


#: Every attribute name of the public vocabularies above (a manifest's names are checked
#: against them for misspellings when it does not declare its own list).
KNOWN_ATTRIBUTES: tuple[str, ...] = tuple(dict.fromkeys(PA100K_ATTRIBUTES + PETA_EVAL_ATTRIBUTES))


def closest_names(name: str, names: Sequence[str], count: int = 3) -> list[str]:
    """The names most similar to ``name`` (`difflib`, case-insensitive), best first."""
    lowered = {n.lower(): n for n in names}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=count, cutoff=0.6)
    return [lowered[m] for m in matches]


def unknown_attribute(name: str, declared: Sequence[str] | None, used: Sequence[str] = ()
                      ) -> tuple[str, list[str]] | None:
    """Why ``name`` looks wrong, with the closest valid names; None when it is fine.

    With a ``declared`` list (a manifest header or ``attribute_names.txt``) a name not in it is
    wrong. Without one the manifest's names are its own vocabulary, and a name is only wrong
    when it is not a public attribute name (`KNOWN_ATTRIBUTES`) but one spelt in another case,
    or close to one while the manifest uses public names too: a likely misspelling that would
    otherwise become a new attribute.

    Args:
        name: An attribute name read from a manifest.
        declared: The names the manifest declares, or None.
        used: Every name the manifest uses (without a declared list).

    Returns:
        ``(source, closest)`` naming the list the name is missing from and its closest names.
    """
    if declared is not None:
        if name in declared:
            return None
        return "the declared attribute names", closest_names(name, declared)
    if name in KNOWN_ATTRIBUTES:
        return None
    public = any(n in KNOWN_ATTRIBUTES for n in used)
    close = [n for n in closest_names(name, KNOWN_ATTRIBUTES)
             if n.lower() == name.lower() or (public and difflib.SequenceMatcher(
                 None, name.lower(), n.lower()).ratio() >= 0.8)]
    return ("the public attribute names (PA-100K, PETA)", close) if close else None

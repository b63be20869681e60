"""Attribute vocabularies of the public pedestrian attribute datasets."""

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

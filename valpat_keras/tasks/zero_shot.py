"""Zero-shot pedestrian attribute recognition with a pretrained image-text backbone.

No attribute head is trained: each attribute is described by a positive prompt ("a person
wearing a hat") and a negative prompt ("a person without a hat"). An image's probability for
the attribute is the softmax over that pair of its scaled cosine similarities with the two
prompt embeddings, using the backbone's learnt logit scale (CLIP-style zero-shot
classification with two classes per attribute). Several prompts per side are averaged
(prompt ensembling).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from keras import ops

from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES
from valpat_keras.evaluation.distances import l2_normalize
from valpat_keras.models.embedding import encode_captions, encode_images
from valpat_keras.models.init import load_backbone
from valpat_keras.tasks.attribute_scores import attribute_labels, paths_of, score_attributes

#: A prompt side: one sentence, or several whose embeddings are averaged.
PromptSide = str | Sequence[str]

# (subject, possessive) pairs: each prompt is written for a man and a woman, so gender cues
# cancel between the two sides of an attribute.
_PEOPLE = (("a man", "his"), ("a woman", "her"))


def _each(*templates: str) -> list[str]:
    """Every template for every subject of `_PEOPLE` ("{s}" subject, "{his}" possessive)."""
    return [t.format(s=s, his=his) for t in templates for s, his in _PEOPLE]


_SUBJECT = _each("{s}")
_FRONT = _each("{s} facing the camera", "{s} walking towards the camera")
_SIDE = _each("{s} seen from the side", "{s} walking sideways")
_BACK = _each("{s} seen from behind", "{s} walking away from the camera")
_SHORT_SLEEVES = _each("{s} wears a short-sleeved top", "{s} wears a T-shirt",
                       "{s} wears a short-sleeved shirt")
_LONG_SLEEVES = _each("{s} wears a long-sleeved shirt", "{s} wears a sweater",
                      "{s} wears a jacket")
_COAT = _each("{s} wears a long coat", "{s} wears a long overcoat")
_PLAIN_TOP = _each("{s} wears a top", "{s} wears a shirt")
_TROUSERS = _each("{s} wears trousers", "{s} wears pants")
_SHORTS = _each("{s} wears shorts")
_SKIRT = _each("{s} wears a skirt", "{s} wears a dress")

#: Default (positive, negative) prompts for the 26 PA-100K attributes, in annotation order.
#: They are written in the words and phrasing of pedestrian captions, as the text encoder
#: only knows the language of its pretraining captions: no "person", no "without" (captions
#: describe what is there; an absent item is simply not mentioned, so the negative side of
#: an accessory is the bare subject, and that of a pattern the same garment, plain).
PA100K_PROMPTS: dict[str, tuple[PromptSide, PromptSide]] = {
    "Female": (["a woman", "a lady", "a girl"], ["a man", "a guy", "a boy"]),
    "AgeOver60": (["an old man", "an old woman", "an elderly man", "an elderly woman"],
                  ["a man", "a woman", "a boy", "a girl"]),
    "Age18-60": (["a man", "a woman", "a guy", "a lady"],
                 ["a boy", "a girl", "an old man", "an old woman"]),
    "AgeLess18": (["a boy", "a girl", "a young boy", "a young girl"],
                  ["a man", "a woman", "an old man", "an old woman"]),
    "Front": (_FRONT, _SIDE + _BACK),
    "Side": (_SIDE, _FRONT + _BACK),
    "Back": (_BACK, _FRONT + _SIDE),
    "Hat": (_each("{s} wears a hat", "{s} has a cap on {his} head"), _SUBJECT),
    "Glasses": (_each("{s} wears glasses", "{s} has glasses on"), _SUBJECT),
    "HandBag": (_each("{s} carries a handbag", "a purse hangs from {his} hand"), _SUBJECT),
    "ShoulderBag": (_each("{s} has a shoulder bag",
                          "{s} carries a messenger bag over {his} shoulder"), _SUBJECT),
    "Backpack": (_each("{s} carries a backpack", "{s} has a rucksack on {his} back"),
                 _SUBJECT),
    "HoldObjectsInFront": (_each("{s} is holding a box in front of {his} body",
                                 "{s} holds something in front of {his} chest"), _SUBJECT),
    "ShortSleeve": (_SHORT_SLEEVES, _LONG_SLEEVES + _COAT),
    "LongSleeve": (_LONG_SLEEVES + _COAT, _SHORT_SLEEVES),
    "UpperStride": (_each("{s} wears a top with stripes",
                          "{s} wears a shirt with horizontal stripes"), _PLAIN_TOP),
    "UpperLogo": (_each("{s} wears a top with a logo",
                        "{s} wears a shirt with a small logo on the chest"), _PLAIN_TOP),
    "UpperPlaid": (_each("{s} wears a top with a plaid pattern",
                         "{s} wears a shirt in a checkered pattern"), _PLAIN_TOP),
    "UpperSplice": (_each("{s} wears a top with a black lower half",
                          "{s} wears a top with a white lower half",
                          "{s} wears a shirt with a grey lower half"), _PLAIN_TOP),
    "LowerStripe": (_each("{s} wears trousers with a stripe down the side",
                          "{s} wears pants with side stripes"), _TROUSERS),
    "LowerPattern": (_each("{s} wears trousers with dots",
                           "{s} wears pants with a dotted pattern"), _TROUSERS),
    "LongCoat": (_COAT, _SHORT_SLEEVES + _LONG_SLEEVES),
    "Trousers": (_TROUSERS, _SHORTS + _SKIRT),
    "Shorts": (_SHORTS, _TROUSERS + _SKIRT),
    "Skirt&Dress": (_SKIRT, _TROUSERS + _SHORTS),
    "boots": (_each("{s} wears boots", "{s} has a pair of boots on"),
              _each("{s} wears shoes", "{s} wears sneakers")),
}


def _as_list(side: PromptSide) -> list[str]:
    return [side] if isinstance(side, str) else [str(s) for s in side]


def resolve_prompts(attribute_names: Sequence[str] | None = None,
                    prompts: Mapping[str, tuple[PromptSide, PromptSide]] | None = None,
                    ) -> dict[str, tuple[list[str], list[str]]]:
    """The (positive, negative) prompt lists of each attribute, defaults overridden by ``prompts``.

    Args:
        attribute_names: Attributes to score; defaults to the 26 PA-100K attributes.
        prompts: Per-attribute ``(positive, negative)`` prompts (a sentence or a list of
            sentences per side) overriding or extending `PA100K_PROMPTS`.

    Returns:
        An ordered dict ``name -> (positive prompts, negative prompts)``.

    Raises:
        KeyError: When an attribute has neither a default nor a given prompt pair.
    """
    names = list(attribute_names) if attribute_names is not None else list(PA100K_ATTRIBUTES)
    table = {**PA100K_PROMPTS, **dict(prompts or {})}
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"no zero-shot prompts for attribute(s) {missing}; pass "
                       f"prompts={{name: (positive, negative)}} for them")
    resolved = {}
    for name in names:
        pair = table[name]
        if len(pair) != 2:
            raise ValueError(f"prompts[{name!r}] must be a (positive, negative) pair, got {pair!r}")
        resolved[name] = (_as_list(pair[0]), _as_list(pair[1]))
    return resolved


def unknown_prompt_words(tokenizer, prompts: Mapping[str, tuple[list[str], list[str]]]
                         ) -> list[str]:
    """Prompt words the tokenizer does not know (its ``unknown_words``).

    With the vocabulary learnt from the pretraining captions, a word that is no whole word of
    it was rare or absent there: it is spelt out in word pieces the text encoder has hardly
    seen, and the prompt's embedding says little about the attribute (e.g. "person" or
    "without" when captions never use them). A pretrained text tower's tokenizer
    (`valpat_keras.data.tokenizer.PresetCaptionTokenizer`) knows word pieces: only words it
    maps to its unknown token count.

    Args:
        tokenizer: The `CaptionTokenizer` of the backbone.
        prompts: Output of `resolve_prompts`.

    Returns:
        The sorted unknown words (lower case).
    """
    words = {w for pos, neg in prompts.values() for text in pos + neg
             for w in re.findall(r"[^\W_]+", text.lower())}
    if hasattr(tokenizer, "unknown_words"):
        return sorted(tokenizer.unknown_words(sorted(words)))
    known = set(tokenizer.vocabulary)  # a tokenizer of another kind: whole words only
    return sorted(w for w in words if w not in known)


def prompt_embeddings(backbone, tokenizer, prompts: Mapping[str, tuple[list[str], list[str]]]
                      ) -> np.ndarray:
    """Embeds every attribute's prompts; returns ``(A, 2, D)`` unit vectors (positive, negative).

    Each side's sentences are embedded, averaged and re-normalised (prompt ensembling).

    Args:
        backbone: A `ValPatBackbone`.
        tokenizer: The `CaptionTokenizer` the backbone's text encoder was trained with.
        prompts: Output of `resolve_prompts`.
    """
    sentences, owners = [], []
    for a, (pos, neg) in enumerate(prompts.values()):
        for side, texts in enumerate((pos, neg)):
            sentences += texts
            owners += [(a, side)] * len(texts)
    emb = encode_captions(backbone, tokenizer, sentences).astype(np.float64)
    out = np.zeros((len(prompts), 2, emb.shape[1]))
    for row, (a, side) in zip(emb, owners):
        out[a, side] += row
    return l2_normalize(out).astype(np.float32)


def zero_shot_attributes(backbone, tokenizer, images_or_paths,
                         prompts: Mapping[str, tuple[PromptSide, PromptSide]] | None = None,
                         attribute_names: Sequence[str] | None = None,
                         image_size: tuple[int, int] | None = None,
                         batch_size: int = 64) -> np.ndarray:
    """Scores attributes without fine-tuning, by comparing images with prompt pairs.

    ``p(attribute) = softmax(s * [cos(x, t_pos), cos(x, t_neg)])[0]`` where ``s`` is the
    backbone's logit scale (the inverse temperature learnt by image-text contrastive
    pretraining).

    Args:
        backbone: A pretrained `ValPatBackbone` (e.g. from
            `valpat_keras.models.init.load_backbone(run_dir)`).
        tokenizer: Its `CaptionTokenizer`.
        images_or_paths: float32 images in [0, 1] ``(N, H, W, 3)`` or image file paths.
        prompts: Per-attribute ``(positive, negative)`` prompts (a sentence or a list per side)
            overriding `PA100K_PROMPTS`; required for attributes outside PA-100K.
        attribute_names: Attributes to score, in output column order (default: PA-100K's 26).
        image_size: ``(H, W)`` to decode paths to (default: the encoder's input size).
        batch_size: Images per forward pass.

    Returns:
        ``(N, A)`` float32 probabilities.

    Example:

    ```python
    backbone, tokenizer = load_backbone("runs/pretrain")
    probs = zero_shot_attributes(backbone, tokenizer, ["img1.jpg", "img2.jpg"],
                                 prompts={"Hat": ("a person in a red cap", "a bare-headed person")})
    ```
    """
    resolved = resolve_prompts(attribute_names, prompts)
    unknown = unknown_prompt_words(tokenizer, resolved)
    if unknown:
        warnings.warn(f"zero-shot prompts use words the tokenizer does not know as whole "
                      f"words (rare or absent in the pretraining captions): {unknown}; those "
                      f"prompts will score poorly. Write prompts in the captions' words "
                      f"(prompts={{name: (positive, negative)}}), or pretrain with a text "
                      f"preset (--text-preset).", stacklevel=2)
    text = prompt_embeddings(backbone, tokenizer, resolved)
    if isinstance(images_or_paths, (str, os.PathLike)):
        images_or_paths = [images_or_paths]
    images = encode_images(backbone, images_or_paths, image_size, batch_size)
    scale = logit_scale_value(backbone)
    logits = scale * np.einsum("nd,asd->nas", images.astype(np.float64), text)
    # Softmax over (positive, negative) of each attribute = sigmoid of the logit difference.
    return (1.0 / (1.0 + np.exp(logits[:, :, 1] - logits[:, :, 0]))).astype(np.float32)


def logit_scale_value(backbone) -> float:
    """The backbone's multiplicative logit scale (its inverse temperature) as a float."""
    return float(ops.convert_to_numpy(backbone.logit_scale))


def evaluate_zero_shot(dataset, run_dir: str | Path | None = None,
                       prompts: Mapping[str, tuple[PromptSide, PromptSide]] | None = None,
                       split: str = "test", batch_size: int = 64, backbone=None,
                       tokenizer=None) -> dict:
    """Zero-shot attribute metrics of a pretraining run on an `AttributeDataset` split.

    Scores the evaluated attributes (``dataset.attribute_names``) of every image of the split
    with `zero_shot_attributes` and evaluates them with
    `valpat_keras.evaluation.evaluate_attributes`.

    Args:
        dataset: An `AttributeDataset`.
        run_dir: A pretraining run folder (or any folder `load_backbone` reads); not needed
            when ``backbone`` and ``tokenizer`` are given.
        prompts: Prompt overrides; needed for attributes outside PA-100K.
        split: ``"test"``, ``"val"`` or ``"train"``.
        batch_size: Images per forward pass.
        backbone: An already loaded `ValPatBackbone` (instead of ``run_dir``).
        tokenizer: Its `CaptionTokenizer`.

    Returns:
        ``ma``, ``instance_acc``, ``instance_prec``, ``instance_recall``, ``instance_f1``,
        ``label_ma`` (name -> mA) and ``label_ma_array`` (the same as an array).
    """
    records = getattr(dataset, split)
    if not records:
        raise ValueError(f"{dataset.name}: the {split} split is empty")
    if backbone is None or tokenizer is None:
        if run_dir is None:
            raise ValueError("evaluate_zero_shot needs run_dir or backbone and tokenizer")
        backbone, tokenizer = load_backbone(run_dir)
    names = dataset.attribute_names
    probs = zero_shot_attributes(backbone, tokenizer, paths_of(records), prompts=prompts,
                                 attribute_names=names, batch_size=batch_size)
    return score_attributes(attribute_labels(records, dataset.eval_indices), probs, names)

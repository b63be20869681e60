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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from valpat_keras.data.attribute_names import PA100K_ATTRIBUTES
from valpat_keras.tasks.search import encode_captions, encode_images

#: A prompt side: one sentence, or several whose embeddings are averaged.
PromptSide = str | Sequence[str]

#: Default (positive, negative) prompts for the 26 PA-100K attributes, in annotation order.
PA100K_PROMPTS: dict[str, tuple[PromptSide, PromptSide]] = {
    "Female": (["a woman", "a lady", "a girl"], ["a man", "a guy", "a boy"]),
    "AgeOver60": (["an old man", "an old woman", "an elderly person"],
                  ["a young man", "a young woman", "a child"]),
    "Age18-60": (["a man", "a woman", "an adult"], ["a child", "an old man", "an old woman"]),
    "AgeLess18": (["a boy", "a girl", "a child"], ["a man", "a woman", "an adult"]),
    "Front": (["a person facing the camera", "a person walking towards the camera"],
              ["a person seen from behind", "a person seen from the side"]),
    "Side": (["a person seen from the side", "a person walking sideways"],
             ["a person facing the camera", "a person seen from behind"]),
    "Back": (["a person seen from behind", "a person walking away from the camera"],
             ["a person facing the camera", "a person seen from the side"]),
    "Hat": (["a person wearing a hat", "a person wearing a cap"], "a person without a hat"),
    "Glasses": ("a person wearing glasses", "a person without glasses"),
    "HandBag": (["a person carrying a handbag", "a person with a purse"],
                "a person without a bag"),
    "ShoulderBag": (["a person carrying a shoulder bag", "a person with a messenger bag"],
                    "a person without a bag"),
    "Backpack": (["a person carrying a backpack", "a person with a rucksack"],
                 "a person without a backpack"),
    "HoldObjectsInFront": ("a person holding something in front",
                           "a person with empty hands"),
    "ShortSleeve": (["a person wearing a short-sleeved top", "a person in a T-shirt"],
                    ["a person wearing a long-sleeved shirt", "a person in a long coat"]),
    "LongSleeve": (["a person wearing a long-sleeved shirt", "a person in a sweater",
                    "a person in a jacket"],
                   ["a person wearing a short-sleeved top", "a person in a T-shirt"]),
    "UpperStride": ("a person wearing a top with stripes", "a person wearing a plain top"),
    "UpperLogo": ("a person wearing a top with a logo", "a person wearing a plain top"),
    "UpperPlaid": (["a person wearing a plaid top", "a person in a checkered shirt"],
                   "a person wearing a plain top"),
    "UpperSplice": ("a person wearing a top with a different coloured lower half",
                    "a person wearing a plain top"),
    "LowerStripe": (["a person wearing trousers with side stripes", "pants with a stripe"],
                    "a person wearing plain trousers"),
    "LowerPattern": (["a person wearing trousers with a dotted pattern", "pants with dots"],
                     "a person wearing plain trousers"),
    "LongCoat": (["a person wearing a long coat", "a person in an overcoat"],
                 ["a person wearing a short-sleeved top", "a person wearing a sweater"]),
    "Trousers": (["a person wearing trousers", "a person wearing pants"],
                 ["a person wearing shorts", "a person wearing a skirt"]),
    "Shorts": ("a person wearing shorts", ["a person wearing trousers",
                                            "a person wearing a skirt"]),
    "Skirt&Dress": (["a person wearing a skirt", "a person wearing a dress"],
                    ["a person wearing trousers", "a person wearing shorts"]),
    "boots": (["a person wearing boots", "a pair of boots"],
              ["a person wearing shoes", "a person wearing sneakers"]),
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
    out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out.astype(np.float32)


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
    from keras import ops

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
    from valpat_keras.evaluation import evaluate_attributes
    from valpat_keras.models.init import load_backbone

    records = getattr(dataset, split)
    if not records:
        raise ValueError(f"{dataset.name}: the {split} split is empty")
    if backbone is None or tokenizer is None:
        if run_dir is None:
            raise ValueError("evaluate_zero_shot needs run_dir or backbone and tokenizer")
        backbone, tokenizer = load_backbone(run_dir)
    names = dataset.attribute_names
    probs = zero_shot_attributes(backbone, tokenizer, [r.path for r in records],
                                 prompts=prompts, attribute_names=names, batch_size=batch_size)
    labels = np.stack([np.asarray(r.attributes) for r in records])[:, dataset.eval_indices]
    result = evaluate_attributes(labels, probs)
    out = {k: float(result[k]) for k in ("ma", "instance_acc", "instance_prec",
                                         "instance_recall", "instance_f1")}
    out["label_ma"] = dict(zip(names, map(float, result["label_ma"])))
    out["label_ma_array"] = result["label_ma"]
    return out

"""One preset per run: save a task with its backbone and preprocessor, load it back.

A task preset folder is what ``keras_hub.models.Task.save_to_preset`` writes:

- ``task.json`` (the task's config, its preprocessor's nested in it) and ``task.weights.h5``
  (the weights outside the backbone, when there are any);
- ``config.json``, ``metadata.json``, ``model.weights.h5`` (the backbone preset);
- ``preprocessor.json``, ``image_converter.json``, ``tokenizer.json`` and
  ``assets/tokenizer/vocabulary.txt`` (the preprocessor and its layers).

`load_task` reads the task class from ``task.json`` and calls its ``from_preset``; keras-hub
then rebuilds the task from ``task.json``, loads the tokenizer's vocabulary into the
preprocessor and restores both weight files. For that a task class declares its backbone
and preprocessor classes, takes ``preprocessor=`` and sets it before building the model:

```python
@keras.saving.register_keras_serializable(package="valpat_keras")
class ReIDModel(ValPatTask):
    backbone_cls = ImageEncoder            # the class saved in config.json
    preprocessor_cls = ImagePreprocessor   # used when a preset has no task.json

    def __init__(self, backbone, num_classes, preprocessor=None, **kwargs):
        self.backbone = backbone
        self.preprocessor = preprocessor
        ...
        super().__init__(inputs=images, outputs=outputs, **kwargs)

    def get_config(self):
        config = super().get_config()      # backbone, preprocessor, name
        config.update({"num_classes": self.num_classes})
        return config
```
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import keras_hub

from valpat_keras.errors import InputError
from valpat_keras.saving import register_all

TASK_CONFIG_FILE = "task.json"
BACKBONE_CONFIG_FILE = "config.json"
PREPROCESSOR_CONFIG_FILE = "preprocessor.json"


def read_preset_json(preset: str | Path, name: str) -> dict:
    """A JSON file of a preset folder; an `InputError` naming the file when it is corrupt.

    keras-hub reads them with a bare ``json.load``, whose error names no file.

    Raises:
        FileNotFoundError: The file is missing (the message names the folder).
        InputError: The file does not parse.
    """
    path = Path(preset) / name
    if not path.is_file():
        raise FileNotFoundError(f"{Path(preset)}: no {name} found; expected a preset folder "
                                "written by save_to_preset (e.g. `task.save_to_preset`).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: corrupt preset file ({err}); expected the JSON that "
                         "save_to_preset writes (copy the run folder again, or rerun "
                         "the command that wrote it)") from None


def check_preset_files(preset: str | Path) -> None:
    """Parses the JSON files a preset folder holds, so a corrupt one is named (`InputError`)."""
    for name in (BACKBONE_CONFIG_FILE, "metadata.json", TASK_CONFIG_FILE,
                 PREPROCESSOR_CONFIG_FILE):
        if (Path(preset) / name).is_file():
            read_preset_json(preset, name)


def _registered_class(config: dict, path: Path) -> type:
    name = config.get("registered_name") or config.get("class_name")
    cls = keras.saving.get_registered_object(name) if name else None
    if cls is None and name:
        # A fresh process may not have imported the defining module yet (the task modules
        # sit above this one): import every registering module by name, then look again.
        register_all()
        cls = keras.saving.get_registered_object(name)
    if cls is None:
        raise InputError(f"{path}: class {name!r} is not registered with Keras; import the "
                         "module that defines it (register_keras_serializable) first.")
    return cls


def save_task(task: keras_hub.models.Task, preset_dir: str | Path) -> Path:
    """Writes ``task`` (backbone, task weights, preprocessor) as one preset folder.

    Args:
        task: A `keras_hub.models.Task` (its ``preprocessor`` may be ``None``).
        preset_dir: The folder (created if missing), e.g. the run folder.

    Returns:
        The folder, as a `Path`.
    """
    if not isinstance(task, keras_hub.models.Task):
        raise TypeError(f"save_task needs a keras_hub.models.Task, got {type(task).__name__}")
    task.save_to_preset(str(preset_dir))
    return Path(preset_dir)


def load_task(preset_dir: str | Path, task_cls: type | None = None, load_weights: bool = True,
              **kwargs) -> keras_hub.models.Task:
    """Loads a task written by `save_task` (or ``task.save_to_preset``), preprocessor included.

    Args:
        preset_dir: The preset (run) folder.
        task_cls: The task class; ``None`` reads it from ``task.json``.
        load_weights: Restore the saved weights (``False``: freshly initialised ones).
        **kwargs: Overrides of the task's config (e.g. ``dtype``), as in ``from_preset``.

    Returns:
        The task, with ``task.preprocessor`` restored (vocabulary included).

    Raises:
        FileNotFoundError: ``task.json`` or ``config.json`` is missing.
        InputError: A corrupt JSON file, an unregistered class, or a task class whose
            ``backbone_cls`` is not the saved backbone's class.
    """
    preset = Path(preset_dir)
    task_config = read_preset_json(preset, TASK_CONFIG_FILE)
    backbone_config = read_preset_json(preset, BACKBONE_CONFIG_FILE)
    check_preset_files(preset)
    task_cls = task_cls or _registered_class(task_config, preset / TASK_CONFIG_FILE)
    backbone_cls = _registered_class(backbone_config, preset / BACKBONE_CONFIG_FILE)
    if getattr(task_cls, "backbone_cls", None) is not backbone_cls:
        raise InputError(
            f"{preset}: the task class {task_cls.__name__} declares backbone_cls="
            f"{getattr(getattr(task_cls, 'backbone_cls', None), '__name__', None)}, but the "
            f"preset's backbone is a {backbone_cls.__name__}; keras-hub's from_preset needs "
            f"`backbone_cls = {backbone_cls.__name__}` on the task class.")
    return task_cls.from_preset(str(preset), load_weights=load_weights, **kwargs)


def load_preprocessor(preset_dir: str | Path) -> keras_hub.models.Preprocessor:
    """The preprocessor saved in a preset folder (``preprocessor.json`` + its assets).

    Works for any backbone class (``Preprocessor.from_preset`` insists that the preprocessor
    class declares the preset's backbone class).

    Raises:
        FileNotFoundError: No ``preprocessor.json``.
        InputError: It does not parse or names an unregistered class.
    """
    preset = Path(preset_dir)
    config = read_preset_json(preset, PREPROCESSOR_CONFIG_FILE)
    _registered_class(config, preset / PREPROCESSOR_CONFIG_FILE)
    preprocessor = keras.saving.deserialize_keras_object(config)
    preprocessor.load_preset_assets(str(preset))
    return preprocessor


def save_backbone(backbone: keras_hub.models.Backbone, preset_dir: str | Path,
                  preprocessor: keras_hub.models.Preprocessor | None = None) -> Path:
    """Writes a backbone preset, with the preprocessor its inputs need in the same folder.

    Args:
        backbone: E.g. the pretrained `ValPatBackbone`.
        preset_dir: The folder (created if missing).
        preprocessor: E.g. its `ValPatPreprocessor` (image size and caption tokenizer);
            read back by `load_preprocessor`.

    Returns:
        The folder, as a `Path`.
    """
    backbone.save_to_preset(str(preset_dir))
    if preprocessor is not None:
        preprocessor.save_to_preset(str(preset_dir))
    return Path(preset_dir)

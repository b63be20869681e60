"""Transfer to pedestrian attribute recognition (PAR): an image encoder plus a linear head.

The public names of the attribute transfer, one concept per module:

- `AttributeRecognizer`, `AttributeMeanAccuracy` (`valpat_keras.tasks.attribute_recognizer`):
  the task model and its fit-time mA metric;
- `HEAD_INITS`, `init_head_from_linear_probe` (`valpat_keras.tasks.attribute_head_init`):
  how the new head starts;
- `AttributesRunConfig`, `train_attributes`, `MODEL_FILE`
  (`valpat_keras.tasks.attribute_training`): the run function and its settings.

Example:

```python
config = AttributesRunConfig(init="runs/pretrain", epochs=30)
metrics = train_attributes(datasets.load("pa100k", "/data/PA-100K"), "runs/par", config)
```
"""

from valpat_keras.tasks.attribute_head_init import HEAD_INITS, init_head_from_linear_probe
from valpat_keras.tasks.attribute_recognizer import AttributeMeanAccuracy, AttributeRecognizer
from valpat_keras.tasks.attribute_training import (
    MODEL_FILE,
    AttributesRunConfig,
    train_attributes,
)

__all__ = [
    "HEAD_INITS",
    "MODEL_FILE",
    "AttributeMeanAccuracy",
    "AttributeRecognizer",
    "AttributesRunConfig",
    "init_head_from_linear_probe",
    "train_attributes",
]

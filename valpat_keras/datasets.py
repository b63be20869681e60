"""Public dataset API: `load`, `available`, `register_dataset`, records, `split_reid_validation`.

Example:

```python
from valpat_keras import datasets

market = datasets.load("market1501", "/data")   # finds Market-1501-v15.09.15/ below /data
print(market.summary())
```
"""

from valpat_keras.data.errors import DatasetFormatError, SkippedImages
from valpat_keras.data.records import (
    AttributeDataset,
    AttributeRecord,
    PretrainDataset,
    PretrainRecord,
    ReIDDataset,
    ReIDRecord,
    TextDataset,
    TextRecord,
)
from valpat_keras.data.registry import available, get_entry, load, register_dataset
from valpat_keras.data.splits import split_reid_validation

__all__ = [
    "AttributeDataset", "AttributeRecord", "DatasetFormatError", "PretrainDataset",
    "PretrainRecord", "ReIDDataset", "ReIDRecord", "SkippedImages", "TextDataset",
    "TextRecord", "available", "get_entry", "load", "register_dataset", "split_reid_validation",
]

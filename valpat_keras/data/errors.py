"""Errors and reports for bad dataset input.

Every loader raises `DatasetFormatError` with the file, the field and what was expected, so a
user sees one clear line instead of a traceback from deep inside a parser. Corrupt images
found while reading are not raised but counted in a `SkippedImages` report.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from valpat_keras.errors import InputError

__all__ = ["DECODE_FAILURE_MARKER", "DatasetFormatError", "SkippedImages", "decode_failure_from"]

#: Starts the message of the error a tf.data pipeline raises when an image fails to decode
#: while it is iterated (see `valpat_keras.data.pipelines`); `decode_failure_from` finds it.
DECODE_FAILURE_MARKER = "valpat: unreadable image in the input pipeline:"


class DatasetFormatError(InputError):
    """A dataset file or folder is not in the expected format.

    Args:
        path: The file or folder that is wrong.
        problem: What is wrong, e.g. ``"missing key 'train_label'"``.
        expected: What was expected instead, e.g. ``"a MATLAB v5 file with keys ..."``.
        field: Optional name of the field/key/column at fault.
    """

    def __init__(self, path: str | Path, problem: str, expected: str | None = None,
                 field: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.expected = expected
        self.field = field
        message = f"{self.path}: {problem}"
        if field:
            message += f" (field '{field}')"
        if expected:
            message += f"; expected {expected}"
        super().__init__(message)


@dataclasses.dataclass
class SkippedImages:
    """Images that could not be read, counted and reported rather than silently dropped.

    Attributes:
        paths: The unreadable image files.
        reasons: One reason per path.
    """

    paths: list[str] = dataclasses.field(default_factory=list)
    reasons: list[str] = dataclasses.field(default_factory=list)

    def add(self, path: str | Path, reason: str) -> None:
        """Records one skipped image."""
        self.paths.append(str(path))
        self.reasons.append(reason)

    def __len__(self) -> int:
        return len(self.paths)

    def report(self, context: str = "") -> str:
        """A one-paragraph summary naming the count and the first few files."""
        if not self.paths:
            return f"{context}no images skipped".strip()
        head = "; ".join(f"{p} ({r})" for p, r in zip(self.paths[:5], self.reasons[:5]))
        more = f" and {len(self.paths) - 5} more" if len(self.paths) > 5 else ""
        return f"{context}skipped {len(self.paths)} unreadable image(s): {head}{more}".strip()

    def warn(self, context: str = "") -> None:
        """Emits the report as a `UserWarning` if anything was skipped."""
        if self.paths:
            warnings.warn(self.report(context), UserWarning, stacklevel=2)


def decode_failure_from(error: BaseException) -> InputError | None:
    """The `InputError` behind a pipeline's decode failure, or None for any other error.

    A tf.data pipeline cannot raise Python exceptions, so an image that fails to decode while
    ``fit`` (or feature extraction) iterates it ends as a TensorFlow ``InvalidArgumentError``
    whose message holds `DECODE_FAILURE_MARKER` and the files. Callers that iterate a pipeline
    turn it into one clear line with this (``except Exception as err: raise
    decode_failure_from(err) or err``); it imports nothing heavy.

    Args:
        error: Any exception.

    Returns:
        An `InputError` whose message is the pipeline's description (the file names), or None.
    """
    text = str(error)
    start = text.find(DECODE_FAILURE_MARKER)
    if start < 0:
        return None
    message = text[start + len(DECODE_FAILURE_MARKER):].strip()
    # TensorFlow appends the graph node and op names after the assertion's data.
    message = message.split("\n")[0].split("]]")[0].rstrip("] ").strip()
    return InputError(message.replace("\\'", "'"))

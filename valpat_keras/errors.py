"""The two kinds of failure a user can fix: bad input, and a training run that diverged.

The `valpat` command turns an `InputError` (bad data, a bad option, a corrupt file; every
message names the file, field or option and what was expected) into one line on stderr and
exit status 2, and a `NonFiniteLossError` into one line and exit status 3. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Input the user can correct: a dataset, a file, an option or a combination of options.

    A `ValueError`, so code that caught the library's earlier ``ValueError`` still does.
    """


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; the message names the loss term and the step."""

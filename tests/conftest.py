"""Shared pytest set-up.

Tests that touch Keras carry the ``keras`` marker: the test script runs the whole suite on
one backend and the marked tests on all three (KERAS_BACKEND=jax, tensorflow, torch).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "jax")

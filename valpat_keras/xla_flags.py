"""The XLA:CPU setting the library applies before JAX starts: convolutions off YNNPACK.

jaxlib 0.10's XLA:CPU lowers convolutions to YNNPACK fusions, and each of those ran on one
thread. In the pretraining step's profile (``benchmarks/profile_pretrain_step.py --backend
jax``) one of two compute threads was busy for about two thirds of the step. With YNNPACK
fusions off (``--xla_cpu_experimental_ynn_fusion_type=``, an empty list) XLA runs
convolutions with its multi-threaded Eigen kernels. In a single-layer measurement a 3x3
convolution's forward and backward took 35 instead of 109 ms on a 2-core AMD EPYC. For the
whole pretraining step (``benchmarks/fast_layers.py``, its ``ynn`` variant;
tutorials/benchmarks.md) it measured within noise in one run and 1.23x faster in another,
never slower.
The values are the same convolutions, up to float rounding.

XLA reads ``XLA_FLAGS`` once, when JAX (or TensorFlow's XLA) creates its first backend, and
aborts on a flag it does not know. So the flag is added only

- when JAX has not started a backend yet (importing `valpat_keras` first is enough),
- when neither ``XLA_FLAGS`` nor the user names the YNNPACK setting already (yours wins),
- for the jaxlib and TensorFlow versions it was checked with (jaxlib >= 0.10, TensorFlow >=
  2.21 when installed),
- and not at all with ``VALPAT_XLA_CPU_DEFAULTS=0``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping
from importlib import metadata

#: Turns off YNNPACK fusions in XLA:CPU (empty list of fusion types).
YNN_OFF_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
#: Set to ``0`` to leave ``XLA_FLAGS`` alone.
OPT_OUT_VARIABLE = "VALPAT_XLA_CPU_DEFAULTS"
#: The oldest versions whose XLA was checked to know the flag.
MIN_VERSIONS = {"jaxlib": (0, 10), "tensorflow": (2, 21)}


def _version(package: str) -> tuple[int, ...] | None:
    """The leading numbers of an installed package's version; None when not installed."""
    try:
        text = metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _jax_started() -> bool:
    """Whether JAX has created a backend already (then ``XLA_FLAGS`` is read and fixed)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(bridge is not None and getattr(bridge, "_backends", None))


def versions_known_to_accept_flag() -> bool:
    """Whether the installed jaxlib, and TensorFlow if any, are versions that know the flag."""
    jaxlib = _version("jaxlib")
    if jaxlib is None or jaxlib < MIN_VERSIONS["jaxlib"]:
        return False
    tensorflow = _version("tensorflow")
    return tensorflow is None or tensorflow >= MIN_VERSIONS["tensorflow"]


def apply_xla_cpu_defaults(environ: MutableMapping[str, str] | None = None) -> bool:
    """Adds `YNN_OFF_FLAG` to ``XLA_FLAGS`` where that is safe (see the module docstring).

    Args:
        environ: The environment to change; None: ``os.environ``.

    Returns:
        Whether the flag was added.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_VARIABLE, "1").strip() == "0":
        return False
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags or _jax_started():
        return False
    if not versions_known_to_accept_flag():
        return False
    environ["XLA_FLAGS"] = f"{flags} {YNN_OFF_FLAG}".strip()
    return True

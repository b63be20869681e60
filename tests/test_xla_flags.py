import os
import subprocess
import sys

import pytest

from valpat_keras import xla_flags
from valpat_keras.xla_flags import OPT_OUT_VARIABLE, YNN_OFF_FLAG, apply_xla_cpu_defaults


@pytest.fixture
def known_versions(monkeypatch):
    monkeypatch.setattr(xla_flags, "versions_known_to_accept_flag", lambda: True)
    monkeypatch.setattr(xla_flags, "_jax_started", lambda: False)


def test_flag_is_added_after_the_users_flags(known_versions):
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert apply_xla_cpu_defaults(environ)
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {YNN_OFF_FLAG}"
    assert not apply_xla_cpu_defaults(environ)  # once only
    assert environ["XLA_FLAGS"].count(YNN_OFF_FLAG) == 1


@pytest.mark.parametrize("environ", [
    {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"},
    {OPT_OUT_VARIABLE: "0"},
])
def test_the_users_choice_wins(known_versions, environ):
    before = dict(environ)
    assert not apply_xla_cpu_defaults(environ)
    assert environ == before


def test_nothing_is_set_once_jax_started_or_for_unchecked_versions(monkeypatch):
    environ = {}
    monkeypatch.setattr(xla_flags, "_version",
                        lambda name: {"jaxlib": (0, 10, 2), "tensorflow": (2, 21, 0)}[name])
    monkeypatch.setattr(xla_flags, "_jax_started", lambda: True)
    assert not apply_xla_cpu_defaults(environ)
    monkeypatch.setattr(xla_flags, "_jax_started", lambda: False)
    monkeypatch.setattr(xla_flags, "_version",
                        lambda name: {"jaxlib": (0, 9, 2), "tensorflow": (2, 21, 0)}[name])
    assert not apply_xla_cpu_defaults(environ)
    monkeypatch.setattr(xla_flags, "_version",
                        lambda name: {"jaxlib": (0, 10, 2), "tensorflow": (2, 20, 0)}[name])
    assert not apply_xla_cpu_defaults(environ)
    monkeypatch.setattr(xla_flags, "_version",
                        lambda name: {"jaxlib": (0, 10, 2), "tensorflow": None}[name])
    assert apply_xla_cpu_defaults(environ)
    assert environ == {"XLA_FLAGS": YNN_OFF_FLAG}


_COMPILED_CONVOLUTION = """
import os
import valpat_keras  # applies the library's XLA:CPU default before JAX starts
import jax, jax.numpy as jnp
from jax import lax
x, k = jnp.ones((4, 16, 16, 64)), jnp.ones((3, 3, 64, 64))
step = jax.jit(jax.grad(lambda k: lax.conv_general_dilated(
    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()))
print("ynn" in step.lower(k).compile().as_text(), os.environ.get("XLA_FLAGS", ""))
"""


def _compiled_has_ynn_fusions(**env) -> tuple[bool, str]:
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", _COMPILED_CONVOLUTION],
                          env={**environ, **env}, capture_output=True, text=True, check=True)
    has_ynn, _, flags = done.stdout.strip().splitlines()[-1].partition(" ")
    return has_ynn == "True", flags


def test_importing_the_library_first_takes_convolutions_off_ynnpack():
    has_ynn, flags = _compiled_has_ynn_fusions()
    if not xla_flags.versions_known_to_accept_flag():
        # Versions the flag was not checked with: XLA_FLAGS is left alone.
        assert YNN_OFF_FLAG not in flags
        return
    assert YNN_OFF_FLAG in flags.split()
    assert not has_ynn
    # The opt-out leaves XLA's default, which (jaxlib 0.10) fuses the convolutions with YNNPACK.
    has_ynn, flags = _compiled_has_ynn_fusions(**{OPT_OUT_VARIABLE: "0"})
    assert YNN_OFF_FLAG not in flags
    assert has_ynn

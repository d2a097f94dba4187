"""The XLA option nml-gradiff's command line sets before jax loads (backends/jax/xla_flags.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from nml_gradiff.backends.jax.xla_flags import OPT_OUT, OPTION, configure_xla


def test_added_once_and_never_over_the_users_choice():
    env = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    assert configure_xla(env, jax_loaded=False)
    assert env["XLA_FLAGS"].startswith("--xla_cpu_multi_thread_eigen=false --xla_backend_")
    assert OPTION in env["XLA_FLAGS"]
    assert not configure_xla(env, jax_loaded=False)          # already there: unchanged
    mine = {"XLA_FLAGS": "--xla_backend_extra_options=something=1"}
    assert not configure_xla(mine, jax_loaded=False) and OPTION not in mine["XLA_FLAGS"]
    assert not configure_xla({OPT_OUT: "0"}, jax_loaded=False)
    assert not configure_xla({}, jax_loaded=True)             # too late once jax is loaded


def test_jax_accepts_the_option_and_computes_the_same():
    """A fresh process with the option: jax starts, and a scan gives the same numbers."""
    code = ("from nml_gradiff.backends.jax.xla_flags import configure_xla; configure_xla(); "
            "import jax, jax.numpy as jnp; jax.config.update('jax_enable_x64', True); "
            "f = lambda c, _: (c * 0.999 + jnp.sin(c), c); "
            "print(repr(float(jax.lax.scan(f, jnp.float64(0.3), None, length=1000)[0])))")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", OPT_OUT)}
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=e).stdout.strip()
           for e in (env, {**env, OPT_OUT: "0"})]
    assert out[0] == out[1] and float(out[0]) != 0.3

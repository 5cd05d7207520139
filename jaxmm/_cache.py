"""JAX's persistent compilation cache, on by default for jaxmm.

Compiling a model's fitting function takes seconds (tens for the largest models); the compiled
executable depends only on the model's shapes, so it is kept on disk and a later session with the
same model loads it instead. Set JAXMM_CACHE_DIR to choose the folder, or to "" to switch this off;
a cache folder the user configured for JAX already is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compilation_cache() -> None:
    folder = os.environ.get("JAXMM_CACHE_DIR", str(Path.home() / ".cache" / "jaxmm" / "xla"))
    if not folder or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

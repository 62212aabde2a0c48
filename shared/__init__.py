"""The training core shared by the products: config, models, chat templates, data, training, generation."""
import importlib.util as _util
import os as _os

# Unsloth must be imported before transformers to patch it. Only where it can run: installed + CUDA.
if _os.environ.get("FT_BACKEND", "auto") != "transformers" and _util.find_spec("unsloth") is not None:
    import torch as _torch

    if _torch.cuda.is_available():
        import unsloth  # noqa: F401

import logging as _logging

# bitsandbytes tries to fetch an optional CPU kernel from the model hub at import and logs a warning when it
# cannot (always, offline); its built-in CPU path is used instead, so the warning only alarms users.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

"""The training core shared by the products: config, models, chat templates, data, training, generation.

Unsloth is not imported here: it patches transformers, TRL and PEFT globally once imported, so it is imported
only when a run's backend resolves to unsloth (`shared/unsloth_backend.py:activate`)."""
import importlib.util as _importlib_util
import logging as _logging
import sys as _sys


def _import_bitsandbytes_on_first_use() -> None:
    """PEFT imports bitsandbytes whenever it is installed, and bitsandbytes imports torch's compiler stack and
    looks for optional kernels: 2.0 of the 6.1 s that `import peft, transformers` took on a 2-core CPU, paid by
    every command although only a quantized (QLoRA) run uses it. The module is registered lazily: its code runs at
    the first attribute read (`models._quantization_config` reads one, so a broken install is still reported
    there)."""
    if "bitsandbytes" in _sys.modules:
        return
    spec = _importlib_util.find_spec("bitsandbytes")
    if spec is None or spec.loader is None:
        return
    spec.loader = _importlib_util.LazyLoader(spec.loader)
    module = _importlib_util.module_from_spec(spec)
    _sys.modules["bitsandbytes"] = module
    spec.loader.exec_module(module)


_import_bitsandbytes_on_first_use()

# bitsandbytes tries to fetch an optional CPU kernel from the model hub at import and logs a warning when it
# cannot (always, offline); its built-in CPU path is used instead, so the warning only alarms users.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

import warnings as _warnings

# PEFT and TRL read the model's `is_gradient_checkpointing`, which transformers 5 renamed and warns about on every
# training and adapter load: a warning about library internals the user cannot act on.
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

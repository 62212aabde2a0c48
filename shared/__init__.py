"""The training core shared by the products: config, models, chat templates, data, training, generation.

Unsloth is not imported here: it patches transformers, TRL and PEFT globally once imported, so it is imported
only when a run's backend resolves to unsloth (`shared/unsloth_backend.py:activate`)."""
import logging as _logging

# bitsandbytes tries to fetch an optional CPU kernel from the model hub at import and logs a warning when it
# cannot (always, offline); its built-in CPU path is used instead, so the warning only alarms users.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

import warnings as _warnings

# PEFT and TRL read the model's `is_gradient_checkpointing`, which transformers 5 renamed and warns about on every
# training and adapter load: a warning about library internals the user cannot act on.
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

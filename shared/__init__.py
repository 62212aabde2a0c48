"""The training core shared by the products: config, models, chat templates, data, training, generation.

Unsloth is not imported here: it patches transformers, TRL and PEFT globally once imported, so it is imported
only when a run's backend resolves to unsloth (`shared/unsloth_backend.py:activate`)."""
import logging as _logging

# bitsandbytes tries to fetch an optional CPU kernel from the model hub at import and logs a warning when it
# cannot (always, offline); its built-in CPU path is used instead, so the warning only alarms users.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

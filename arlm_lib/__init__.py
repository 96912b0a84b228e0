"""arlm_lib: the small, tested PyTorch library behind the interactive guide to autoregressive LMs.

Modules, one job each: ``tokenizers`` (char and BPE), ``data`` (token streams to batches), ``model``
(the GPT), ``train`` (the Trainer), ``checkpoint`` (safetensors checkpoints), ``generate`` (decoding),
``corpus`` (built-in corpora), ``ngram`` (count-based baseline), ``viz`` and ``widgets`` (views).
"""

__version__ = "0.1.0"

from .errors import ArlmError  # noqa: E402,F401

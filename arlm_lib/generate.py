"""Text generation: logits processors, streaming sampling with a KV cache, beam and contrastive search,
speculative decoding, scoring, metrics.

The code lives in ``arlm_lib.generation`` (one module per job); this module is the public face::

    from arlm_lib.generate import GenerationConfig, generate, generate_text

    for step in generate(model, [[5, 7, 1]], GenerationConfig(temperature=0.8, top_p=0.9), seed=0):
        print(step.tokens[0].token_id, step.tokens[0].prob)

Decisions, in one place:

* **Processor order** (``arlm_lib.generation.processors``): repetition penalty -> no-repeat n-gram
  -> temperature -> top-k -> top-p -> min-p -> typical -> epsilon -> eta, as Hugging Face does.
  Greedy (temperature 0 or ``do_sample=False``) uses only the two penalties, then takes the argmax.
* **Ties**: top-k keeps exactly k tokens; among tokens tied at the k-th score the lower ids win. The
  same rule orders top-p's nucleus, typical sampling's set, greedy's argmax and beam candidates.
* **Reported probabilities**: each token carries ``prob`` (under the processed distribution it was
  drawn from) and ``raw_prob`` / ``logprob`` (the model's plain softmax); ``score_sequence`` sums the
  latter. ``return_top=N`` alternatives: ``top`` lists only tokens the filters left a probability > 0
  (so possibly fewer than N), ``top_raw`` the model's N most likely.
* **Empty prompt**: starts from the document-start token ``tokenizer.bos_id`` (or ``bos_id=``).
* **Long prompts** are cropped from the left to ``block_size`` tokens, with a warning.
* **Past the context**: the window of tokens the model sees grows to ``block_size`` and is then cut
  back to its last ``context_keep`` tokens (default ``block_size // 2``), re-encoded from position 0.
  Cache and no cache see the same windows (same tokens); scoring uses the same windows.
* **Sampling draws on the CPU** from a seeded ``torch.Generator``: the same seed, the same text.
"""

from .generation.beam import BeamHypothesis, beam_search
from .generation.cli import sample_cli
from .generation.config import GenerationConfig
from .generation.context import ContextWindow
from .generation.contrastive import contrastive_search
from .generation.metrics import distinct_n, has_repetition, repetition_rate
from .generation.processors import (
    EpsilonCutoff,
    EtaCutoff,
    LogitsProcessor,
    MinP,
    NoRepeatNGram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    TypicalP,
    VocabLimit,
    apply_processors,
    processed_probs,
)
from .generation.sampling import (
    GeneratedToken,
    GenerationStep,
    generate,
    generate_ids,
    generate_text,
    make_generator,
    stream_text,
)
from .generation.scoring import SequenceScore, generated_perplexity, score_sequence, score_text
from .generation.speculative import SpeculativeResult, speculative_generate

__all__ = [
    "BeamHypothesis",
    "ContextWindow",
    "EpsilonCutoff",
    "EtaCutoff",
    "GeneratedToken",
    "GenerationConfig",
    "GenerationStep",
    "LogitsProcessor",
    "MinP",
    "NoRepeatNGram",
    "RepetitionPenalty",
    "SequenceScore",
    "SpeculativeResult",
    "Temperature",
    "TopK",
    "TopP",
    "TypicalP",
    "VocabLimit",
    "apply_processors",
    "beam_search",
    "contrastive_search",
    "distinct_n",
    "generate",
    "generate_ids",
    "generate_text",
    "generated_perplexity",
    "has_repetition",
    "make_generator",
    "processed_probs",
    "repetition_rate",
    "sample_cli",
    "score_sequence",
    "score_text",
    "speculative_generate",
    "stream_text",
]

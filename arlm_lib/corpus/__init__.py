"""Built-in corpora: the synthetic language with exact probabilities, the prose corpus, and text loading.

``load_corpus(name_or_path, size=None)`` is the one entry point the rest of arlm_lib uses;
``list_corpora()`` / ``format_corpus_list()`` / ``format_corpus_info(name)`` back ``python -m arlm_lib corpus``.
"""

from arlm_lib.corpus.entropy import (
    SYNTHETIC_CORPORA,
    EntropyEstimate,
    TokenEntropyEstimate,
    entropy_rate,
    text_bits_per_char,
    token_entropy_rate,
)
from arlm_lib.corpus.loading import (
    TINY_SHAKESPEARE_SHA256,
    TINY_SHAKESPEARE_URL,
    load_text,
    resolve_cache_dir,
)
from arlm_lib.corpus.prose import prose_text
from arlm_lib.corpus.registry import (
    CorpusInfo,
    corpus_names,
    format_corpus_info,
    format_corpus_list,
    get_corpus_info,
    list_corpora,
    load_corpus,
)
from arlm_lib.corpus.synthetic import AgreementItem, GrammarConfig, SyntheticLanguage

__all__ = [
    "SYNTHETIC_CORPORA",
    "TINY_SHAKESPEARE_SHA256",
    "TINY_SHAKESPEARE_URL",
    "AgreementItem",
    "CorpusInfo",
    "EntropyEstimate",
    "GrammarConfig",
    "SyntheticLanguage",
    "TokenEntropyEstimate",
    "corpus_names",
    "entropy_rate",
    "format_corpus_info",
    "format_corpus_list",
    "get_corpus_info",
    "list_corpora",
    "load_corpus",
    "load_text",
    "prose_text",
    "resolve_cache_dir",
    "text_bits_per_char",
    "token_entropy_rate",
]

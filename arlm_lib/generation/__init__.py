"""Text generation, split by job; import the public names from :mod:`arlm_lib.generate`.

``processors`` (logits processors), ``config`` (GenerationConfig), ``context`` (context window and KV
cache), ``sampling`` (streaming generate), ``beam`` (beam search), ``contrastive`` (contrastive
search), ``search`` (what those two share), ``speculative`` (speculative decoding), ``scoring``
(chain-rule scores), ``metrics`` (distinct-n, repetition), ``cli`` (the ``sample`` command).
"""

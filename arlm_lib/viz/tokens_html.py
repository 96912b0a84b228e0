"""Tokens coloured by their probability, as HTML (no plotly): a scored text and a generation."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .theme import THEME, Theme, _visible

# ------------------------------------------------------------------- coloured tokens (HTML, no plotly)


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def probability_color(p: float, theme: Theme = THEME) -> str:
    """The background colour of a token with probability ``p``: warm when surprising, cool when expected."""
    p = min(1.0, max(0.0, float(p) if math.isfinite(p) else 0.0))
    stops = [_hex_to_rgb(c) for c in theme.probability_stops]
    pos = p * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    frac = pos - i
    rgb = [round(a + (b - a) * frac) for a, b in zip(stops[i], stops[i + 1])]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def token_probability_html(
    tokens: Sequence[str],
    probs: Sequence[float],
    top_alternatives: Sequence[Sequence[tuple[str, float]]] | None = None,
    *,
    prompt: str = "",
    legend: bool = True,
    theme: Theme = THEME,
) -> str:
    """Generated text as HTML: each token's background shows its probability, and its hover title lists
    the top alternatives. Every piece of text is ``html.escape``-d: a prompt of
    ``<img src=x onerror=alert(1)>`` shows as those characters.
    """
    if len(tokens) != len(probs):
        raise ConfigError(f"got {len(tokens)} tokens but {len(probs)} probabilities: they must match")
    if top_alternatives is not None and len(top_alternatives) != len(tokens):
        raise ConfigError(f"got {len(top_alternatives)} alternative lists for {len(tokens)} tokens")
    parts = [
        f'<div class="arlm-token-text" style="font-family: {html.escape(theme.mono_family)}; '
        'white-space: pre-wrap; line-height: 1.9; word-break: break-word;">'
    ]
    if prompt:
        parts.append(f'<span class="arlm-prompt" style="font-weight: 600;">{html.escape(prompt)}</span>')
    for i, (token, p) in enumerate(zip(tokens, probs)):
        lines = [f"{_visible(token, 40)}  p = {p:.3f}"]
        if top_alternatives is not None and top_alternatives[i]:
            lines.append("top alternatives:")
            lines += [f"  {_visible(alt, 24)}  {alt_p:.3f}" for alt, alt_p in top_alternatives[i]]
        title = html.escape("\n".join(lines), quote=True)  # the browser un-escapes it once for the tooltip
        parts.append(
            f'<span class="arlm-token" style="background-color: {probability_color(p, theme)}; '
            f'border-radius: 3px; padding: 1px 0; box-shadow: inset -1px 0 #ffffff;" title="{title}">{html.escape(str(token))}</span>'
        )
    parts.append("</div>")
    if legend:
        stops = ", ".join(theme.probability_stops)
        parts.append(
            '<div class="arlm-token-legend" style="font-size: 0.8em; margin-top: 4px;">probability of each '
            'token: 0 <span style="display: inline-block; width: 120px; height: 0.8em; vertical-align: middle; '
            f'background: linear-gradient(to right, {stops});"></span> 1 (hover a token for the alternatives)</div>'
        )
    return "".join(parts)


def generation_html(
    tokenizer: Any,
    generated: Sequence[Any],
    *,
    prompt: str = "",
    processed: bool = True,
    legend: bool = True,
    theme: Theme = THEME,
) -> str:
    """:func:`token_probability_html` for the :class:`~arlm_lib.generate.GeneratedToken` s that
    :func:`~arlm_lib.generate.generate` streamed (``return_top=N`` fills the alternatives).

    ``processed=True`` shows each token's probability under the distribution it was drawn from;
    ``False`` the model's own (raw) probability.
    """
    tokens = [tokenizer.id_to_token(t.token_id) for t in generated]
    probs = [t.prob if processed else t.raw_prob for t in generated]
    alternatives = [
        [(tokenizer.id_to_token(i), p) for i, p in (t.top if processed else t.top_raw)] for t in generated
    ]
    return token_probability_html(tokens, probs, alternatives, prompt=prompt, legend=legend, theme=theme)

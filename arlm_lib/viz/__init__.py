"""Plotly figure builders: attention, head scores, training curves, next-token distributions.

Every builder returns a self-contained :class:`plotly.graph_objects.Figure`. Its interactivity (layer
and head selectors, sliders over query tokens, the decoding explorer's sliders, a log-scale toggle) lives
in the figure's own ``updatemenus`` / ``sliders`` over precomputed data, so it works in the static HTML
book with no kernel. Show a figure with :func:`arlm_lib.display.show`; the kernel apps in
:mod:`arlm_lib.widgets` wrap these same builders and never draw a figure their own way.

Import the public names from here; the submodules split the work by job:

* ``theme``: :class:`Theme`, ``THEME`` (the default), :func:`style_figure`, :func:`token_label` and
  the shared text and array helpers.
* ``attention``: attention weights (:func:`attention_array`, :func:`model_attention`) and their views
  (:func:`attention_heatmap`, :func:`attention_figure`, :func:`attention_grid`,
  :func:`token_attention_bars`).
* ``heads``: head scores (:func:`repeated_sequence_batch`, :func:`induction_scores`,
  :func:`previous_token_scores`, :func:`head_scores_figure`).
* ``training``: :func:`training_curves` and :func:`update_training_curves`.
* ``decoding``: next-token distributions (:func:`next_token_probs`, :func:`next_token_distribution`)
  and the decoding explorer (:func:`decoding_explorer_figure`, :func:`decoding_explorer`).
* ``tokens_html``: tokens coloured by probability, as HTML (:func:`probability_color`,
  :func:`token_probability_html`, :func:`generation_html`).

Two plotly.js facts shape the code:

* plotly's controls are independent: a button cannot read another control's value. Two dropdowns (layer
  and head) compose by rewriting each other's buttons (``_linked_menus``). The decoding explorer
  has four controls, so each one owns a different attribute that can hide a trace (``visible``, trace
  ``opacity``, ``marker.opacity``, the alpha of ``marker.color``) and a bar shows only where all four
  agree: a logical AND computed by the renderer (:func:`decoding_explorer_figure`).
* plotly renders a small HTML subset in every label. Text that came from a tokenizer or a reader goes
  through :func:`token_label` / :func:`html.escape`, so ``<img src=x onerror=...>`` shows as text.
"""

from __future__ import annotations

from .attention import (
    attention_array,
    attention_figure,
    attention_grid,
    attention_heatmap,
    model_attention,
    token_attention_bars,
)
from .decoding import decoding_explorer, decoding_explorer_figure, next_token_distribution, next_token_probs
from .heads import head_scores_figure, induction_scores, previous_token_scores, repeated_sequence_batch
from .theme import THEME, Theme, style_figure, token_label
from .tokens_html import generation_html, probability_color, token_probability_html
from .training import training_curves, update_training_curves

__all__ = [
    "THEME",
    "Theme",
    "attention_array",
    "attention_figure",
    "attention_grid",
    "attention_heatmap",
    "decoding_explorer",
    "decoding_explorer_figure",
    "generation_html",
    "head_scores_figure",
    "induction_scores",
    "model_attention",
    "next_token_distribution",
    "next_token_probs",
    "previous_token_scores",
    "probability_color",
    "repeated_sequence_batch",
    "style_figure",
    "token_attention_bars",
    "token_label",
    "token_probability_html",
    "training_curves",
    "update_training_curves",
]

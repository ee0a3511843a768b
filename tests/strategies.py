"""Hypothesis strategies shared by the halfv test-suite.

Tensors are generated from one drawn integer seed through a ``torch.Generator`` rather than
element by element, which keeps example generation fast and shrinking meaningful (the
shapes and the seed shrink; the values follow).
"""

from __future__ import annotations

from hypothesis import strategies as st

import halfv.testing as _testing

__all__ = ["SelectionInputs", "keep_ratios", "selection_inputs", "visual_layouts"]

# the selection strategy is published for plugin authors; the suite uses the same one
SelectionInputs = _testing.SelectionInputs
selection_inputs = _testing.selection_inputs


@st.composite
def visual_layouts(
    draw: st.DrawFn,
    *,
    max_spans: int = 3,
    min_spans: int = 0,
    max_span_len: int = 32,
    max_gap: int = 8,
    min_gap: int = 1,
    min_prefix: int = 0,
    min_suffix: int = 1,
) -> tuple[int, list[tuple[int, int]]]:
    """Draw a sequence length ``T`` and non-overlapping visual spans inside it.

    The layout is ``prefix, span, gap, span, ..., span, suffix`` where each gap between
    two spans has at least ``min_gap`` text tokens (default 1, like the vision start/end
    markers of real prompts), the prefix at least ``min_prefix`` and the suffix at least
    ``min_suffix`` (default 1: the last token, the relevance query, is text). With zero spans
    the sequence is text only.

    Args:
        draw: supplied by :func:`hypothesis.strategies.composite`.
        max_spans: most visual spans.
        min_spans: fewest visual spans.
        max_span_len: longest span (every span has at least one token).
        max_gap: most text tokens in the prefix, in a gap or in the suffix beyond its minimum.
        min_gap: fewest text tokens between two spans.
        min_prefix: fewest text tokens before the first span.
        min_suffix: fewest text tokens after the last span.

    Returns:
        ``(T, spans)`` with ``spans`` a list of ``(start, length)``, sorted by start,
        pairwise disjoint and inside ``[0, T)``. ``T >= 1``.
    """
    n_spans = draw(st.integers(min_spans, max_spans), label="n_spans")
    lengths = draw(
        st.lists(st.integers(1, max_span_len), min_size=n_spans, max_size=n_spans),
        label="lengths",
    )
    extra = draw(
        st.lists(st.integers(0, max_gap), min_size=n_spans + 1, max_size=n_spans + 1),
        label="text_extra",
    )
    spans: list[tuple[int, int]] = []
    pos = min_prefix + extra[0]
    for i, length in enumerate(lengths):
        if i > 0:
            pos += min_gap + extra[i]
        spans.append((pos, length))
        pos += length
    total = max(1, pos + min_suffix + extra[-1])
    return total, spans


def keep_ratios() -> st.SearchStrategy[float]:
    """Keep ratios in ``(0, 1]``, with the edge ``1.0`` and tiny values included."""
    return st.one_of(
        st.just(1.0),
        st.floats(min_value=1e-6, max_value=1.0, exclude_min=False, allow_nan=False),
    )

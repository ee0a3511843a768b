"""Span joiners (:func:`halfv.ops.spans.find_visual_spans` with ``joiner_ids``): visual
runs separated only by joiner tokens are one span, budgeted on its visual tokens."""

from __future__ import annotations

import pytest
import torch

from halfv.errors import HalfvValueError
from halfv.ops.budget import kept_count
from halfv.ops.spans import find_visual_spans
from halfv.runtime.plan import PrefillPlan

V, J, E, T = 5, 9, 8, 1  # visual, joiner, end marker (not a joiner), text


def test_rows_joined_into_one_span_per_image() -> None:
    ids = torch.tensor([[T, V, V, J, V, V, J, V, V, E, T, V, V, J, V, E, T]])
    spans = find_visual_spans(ids, [V], joiner_ids=[J])
    assert spans.spans == (((1, 8), (11, 4)),)
    assert spans.sizes == ((6, 3),)
    assert spans.total == 9
    assert spans.mask.sum() == 9  # joiners are not visual
    plain = find_visual_spans(ids, [V])
    assert plain.spans == (((1, 2), (4, 2), (7, 2), (11, 2), (14, 1)),)
    assert plain.sizes is None
    assert plain.span_sizes == ((2, 2, 2, 2, 1),)


def test_joiners_at_the_edges_and_between_text_do_not_join() -> None:
    ids = torch.tensor([[J, V, V, J, J, V, J, T, J, V, J], [T, J, T, J, T, T, T, T, T, T, T]])
    spans = find_visual_spans(ids, [V], joiner_ids=[J])
    assert spans.spans == (((1, 5), (9, 1)), ())  # a joiner run may be longer than one
    assert spans.sizes == ((3, 1), ())


def test_joined_span_budgets_and_span_ids() -> None:
    ids = torch.tensor([[T, V, V, J, V, V, J, V, V, E, T]])
    spans = find_visual_spans(ids, [V], joiner_ids=[J])
    plan = PrefillPlan.build(spans, None, 0.5, 0.25)
    (budget,) = plan.budgets
    assert (budget.start, budget.length, budget.extent) == (1, 6, 8)
    assert (budget.ivr_keep, budget.ssr_keep) == (kept_count(6, 0.5), kept_count(6, 0.25))
    assert plan.span_id[0].tolist() == [-1, 0, 0, -1, 0, 0, -1, 0, 0, -1, -1]
    counts, visual = plan.alive_counts("ivr")
    assert (counts, visual) == ([11 - 6 + 3], [3])


def test_query_position_is_never_visual_with_joiners() -> None:
    ids = torch.tensor([[T, V, V, J, V, V]])
    spans = find_visual_spans(ids, [V], keep_positions=torch.tensor([5]), joiner_ids=[J])
    assert spans.spans == (((1, 4),),)
    assert spans.sizes == ((3,),)


def test_a_token_cannot_be_visual_and_a_joiner() -> None:
    with pytest.raises(HalfvValueError, match="both visual and span joiners"):
        find_visual_spans(torch.tensor([[V, J]]), [V, J], joiner_ids=[J])

"""open_clip text towers pooled at the end-of-text token ask the model for that token's id."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_gradeclip.adapters.open_clip import OpenCLIPAdapter


class _EosPooledCLIP(nn.Module):
    """The attributes OpenCLIPAdapter.eos_index reads from an open_clip ``CLIP`` (text tower on the model itself)."""

    def __init__(self, eos_id: int | None) -> None:
        super().__init__()
        self.text_pool_type = "eos"
        if eos_id is not None:
            self.text_eos_id = eos_id


def test_eos_pooled_text_tower_pools_at_the_first_end_of_text_token():
    ids = torch.tensor([[49406, 320, 7, 49407, 0], [49406, 7, 7, 7, 7]])
    pooled = OpenCLIPAdapter(_EosPooledCLIP(eos_id=7)).eos_index(ids, None)
    assert pooled.tolist() == [2, 1]


def test_eos_pooled_text_tower_without_an_end_of_text_id_is_a_clear_error():
    # `input_ids == None` is the Python bool False, so the pooled position was an AttributeError about `.int()`
    adapter = OpenCLIPAdapter(_EosPooledCLIP(eos_id=None))
    with pytest.raises(ValueError, match="pool_type 'eos' needs the model's end-of-text id"):
        adapter.eos_index(torch.tensor([[49406, 320, 49407]]), None)

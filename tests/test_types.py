import pytest
import torch

from mmim.types import Layout, StreamMask, gather_tokens


def test_layout_counts_grid_tokens():
    assert Layout(batch_size=2, grid=(3, 4)).num_tokens == 12
    with pytest.raises(ValueError, match="num_tokens=5"):
        Layout(batch_size=2, grid=(3, 4), num_tokens=5)
    with pytest.raises(ValueError):
        Layout(batch_size=2)


def test_stream_mask_bool_and_restore_roundtrip():
    visible = torch.tensor([[3, 0], [1, 2]])
    masked = torch.tensor([[1, 2], [0, 3]])
    m = StreamMask(visible, masked)
    assert m.bool_mask().tolist() == [[False, True, True, False], [True, False, False, True]]
    restore = m.restore_order()
    shuffled = torch.cat([visible, masked], 1)
    assert torch.equal(torch.gather(shuffled, 1, restore), torch.arange(4).expand(2, -1))
    back = StreamMask.from_bool(m.bool_mask())
    assert torch.equal(back.bool_mask(), m.bool_mask())


def test_stream_mask_rejects_ragged_counts():
    with pytest.raises(ValueError, match="same number"):
        StreamMask.from_bool(torch.tensor([[True, False], [True, True]]))


def test_gather_tokens_broadcasts_shared_positions():
    x = torch.arange(12.0).reshape(1, 4, 3)
    out = gather_tokens(x, torch.tensor([[2, 0], [1, 3]]))
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[1, 1], x[0, 3])

"""``sampling="segments"``: one frame per equal segment (VideoMAE's Something-Something V2 fine-tuning)."""

from __future__ import annotations

import pytest
import torch

from mmim_video.dataset import VideoList, segment_indices

from .unusual_videos import write_video


@pytest.mark.parametrize("total,n", [(40, 16), (16, 16), (100, 8), (33, 5)])
def test_training_takes_one_random_frame_in_each_segment(total, n):
    torch.manual_seed(0)
    length = total // n
    seen = set()
    for _ in range(20):
        idx = segment_indices(total, n, True)
        assert len(idx) == n and idx == sorted(idx)
        assert all(i * length <= f < (i + 1) * length for i, f in enumerate(idx))
        seen.add(tuple(idx))
    assert len(seen) > 1 or length == 1


def test_evaluation_takes_segment_middles():
    assert segment_indices(32, 4, False) == [4, 12, 20, 28]
    assert segment_indices(10, 4, False) == [1, 3, 6, 8]  # int(tick/2 + tick*i), tick = 2.5


def test_short_videos_follow_the_official_fallbacks():
    torch.manual_seed(0)
    assert segment_indices(3, 4, True) == [0, 0, 0, 0]  # no segment of length 1 and not longer than n
    assert all(0 <= i < 3 for i in segment_indices(3, 4, False))


def test_dataset_option_changes_the_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", frames=32)
    (tmp_path / "list.txt").write_text(f"{path} 0\n")
    kw = dict(root="/", list_file=str(tmp_path / "list.txt"), num_frames=4, sampling_rate=2, img_size=16)
    chosen = {}
    for sampling in ("stride", "segments"):
        ds = VideoList("val", False, sampling=sampling, **kw)
        chosen[sampling] = ds.choose_frames(32)
        assert ds[0]["video"].shape == (3, 4, 16, 16)
    assert chosen == {"stride": [0, 2, 4, 6], "segments": [4, 12, 20, 28]}
    with pytest.raises(ValueError, match="sampling must be one of"):
        VideoList("val", False, sampling="dense", **kw)

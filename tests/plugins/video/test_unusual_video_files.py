"""Every video backend on a corpus of unusual and broken files generated here (``unusual_videos.py``):
codecs and containers decode, rotation metadata gives upright frames in every backend, what is not a
video is refused with the file and the reason, and a dataset item opens and decodes its file once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmim.data import CorruptSampleError
from mmim_video import reader
from mmim_video.dataset import VideoList

from .unusual_videos import FRAMES, H, W, bad_corpus, frame, good_corpus

BACKENDS = reader.available_backends()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return good_corpus(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_corpus(tmp_path_factory.mktemp("bad"))


def _upright(name: str, i: int) -> np.ndarray:
    """What frame ``i`` of ``name`` looks like played back (rotation applied, counter-clockwise)."""
    f = frame(i, 30, 50) if "odd_width" in name else frame(i)
    turns = {"rot90": 1, "rot180": 2, "rot270": 3}
    return np.rot90(f, next((k for key, k in turns.items() if key in name), 0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_codecs_containers_and_rotation_decode_upright(good, backend):
    for name, path in good.items():
        assert reader.frame_count(path, backend) == FRAMES, name
        got = reader.read_frames(path, [0, FRAMES - 1], backend).numpy().astype(float)
        want = np.stack([_upright(name, 0), _upright(name, FRAMES - 1)]).astype(float)
        assert got.shape == want.shape, (name, backend)
        assert np.abs(got - want).mean() < 12, (name, backend)  # lossy codecs; a wrong turn is ~100


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "pyav"])
def test_backends_agree_on_every_good_file(good, backend):
    if "pyav" not in BACKENDS:
        pytest.skip("PyAV is the reference")
    for name, path in good.items():
        a = reader.read_frames(path, [1, 4, 4], backend).float()
        b = reader.read_frames(path, [1, 4, 4], "pyav").float()
        assert a.shape == b.shape and (a - b).abs().mean() < 2, (name, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["png_as_mp4", "jpeg_as_avi", "one_frame", "audio_only_m4a", "audio_only_ogg",
                                  "audio_with_cover", "zero_frames", "truncated", "garbage", "empty", "missing"])
def test_what_is_not_a_video_is_refused_naming_the_file(bad, backend, case):
    path, reason = bad[case]
    for call in (lambda: reader.read_frames(path, [0], backend), lambda: reader.frame_count(path, backend)):
        with pytest.raises(CorruptSampleError, match=reason) as info:
            call()
        assert path.name in str(info.value)


def test_refusals_say_what_the_file_is(bad):
    """With PyAV installed every backend names the kind of non-video, not just a decoder message."""
    if "pyav" not in BACKENDS:
        pytest.skip("the diagnosis reads the container with PyAV")
    for backend in BACKENDS:
        for case, want in [("png_as_mp4", "still image"), ("audio_only_m4a", "no video stream"),
                           ("audio_with_cover", "still image|cover"), ("one_frame", "still image")]:
            with pytest.raises(CorruptSampleError, match=want):
                reader.read_frames(bad[case][0], [0], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dataset_item_opens_and_decodes_once(good, tmp_path, monkeypatch, backend):
    """Counting the frames costs no second open or decode: one open per item, whichever backend."""
    opens = []
    for name, opener in list(reader._OPENERS.items()):
        monkeypatch.setitem(reader._OPENERS, name, lambda p, _o=opener, _n=name: opens.append(_n) or _o(p))
    decodes = []
    real = reader._pyav_decode_all
    monkeypatch.setattr(reader, "_pyav_decode_all", lambda p: decodes.append(p) or real(p))
    (tmp_path / "list.txt").write_text(f"{good['h264.mp4']} 0\n")
    ds = VideoList("train", True, root="/", list_file=str(tmp_path / "list.txt"), num_frames=4, sampling_rate=2,
                   img_size=16, backend=backend)
    torch.manual_seed(0)
    before = dict(reader.DECODE_STATS)
    assert ds[0]["video"].shape == (3, 4, 16, 16)
    assert opens == [backend]
    assert decodes == []  # an MP4 with timestamps and keyframes: PyAV seeks, no whole-stream decode
    assert reader.DECODE_STATS["clips"] == before["clips"] + 1
    if backend == "pyav":  # it decodes at most the frames up to the last one the clip uses
        frames = reader.frame_count(good["h264.mp4"], "pyav")
        assert 1 <= reader.DECODE_STATS["decoded"] - before["decoded"] <= frames


def test_corpus_frame_is_what_the_tests_assume():
    f = frame(3)
    assert f.shape == (H, W, 3) and f[:, 0, 0].min() == 255 and f[:, -1, 0].max() == 0

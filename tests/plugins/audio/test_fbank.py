"""The torch Kaldi fbank and Audio-MAE's front end against torchaudio's numbers (tests/fixtures/fbank)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmim_audio.fbank import LOG_FLOOR, kaldi_fbank, mel_banks, num_frames, torchaudio_kaldi
from mmim_audio.frontend import NORM_STATS, AudioMAEFrontend, normalize, pad_or_crop

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "fbank"
FLOOR = -15.942384719848633  # log(float32 eps)


@pytest.fixture(scope="module")
def fbank_fixture():
    config = json.loads((FIXTURE / "config.json").read_text())
    return config, load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


def _centered(config, inputs, case: str) -> torch.Tensor:
    """The case's waveform minus the exact float32 mean the fixture subtracted (thread-count independent)."""
    entry = config["cases"][case]
    return inputs[entry["input"]] - torch.tensor(float.fromhex(entry["waveform_mean_float32_hex"]), dtype=torch.float32)


def _assert_fbank_close(got: torch.Tensor, ref: torch.Tensor, loud_from: float = -5.0, scale: float = 1.0) -> None:
    """The fixture README's float32 tolerance: 1e-3 where ``ref >= loud_from``, 1e-2 elsewhere, divided by ``scale``."""
    assert got.shape == ref.shape
    assert torch.isfinite(got).all()
    err = (got - ref).abs()
    loud = ref >= loud_from
    assert err.max() <= 1e-2 / scale, f"max error {err.max():.3g}"
    if loud.any():
        assert err[loud].max() <= 1e-3 / scale, f"max error where loud: {err[loud].max():.3g}"


CASES = ["fbank128/chirp_3s", "fbank128/silence_1s", "fbank128/noise_0p5s", "fbank128/speech_seven",
         "fbank128/long_10p24s", "fbank80/chirp_3s"]


@pytest.mark.parametrize("case", CASES)
def test_torch_fbank_matches_torchaudio_fixture(fbank_fixture, case):
    config, inputs, outputs = fbank_fixture
    bins = config["cases"][case]["kwargs"]["num_mel_bins"]
    got = kaldi_fbank(_centered(config, inputs, case), sample_rate=16000, num_mel_bins=bins)
    _assert_fbank_close(got, outputs[case])


@pytest.mark.parametrize("bins", [128, 80])
def test_mel_banks_match(fbank_fixture, bins):
    _, _, outputs = fbank_fixture
    banks = mel_banks(bins, 512, 16000.0, 20.0, 0.0)
    # float32 log/exp of the mel scale differ by an ulp between CPUs' vector math; at a triangle's
    # edge the weight (a difference over the filter width) moves by up to 1.1e-5 (Ice Lake Xeon against
    # the fixture's machine); a wrong edge, scale or bin is off by 1e-2 or more
    torch.testing.assert_close(banks, outputs[f"mel_banks/{bins}"], atol=5e-5, rtol=0)


def test_empty_filter_and_silence_floor(fbank_fixture):
    _, _, outputs = fbank_fixture
    banks = mel_banks(128, 512, 16000.0)
    assert banks[3].abs().sum() == 0 and (banks.sum(1) > 0).sum() == 127  # only filter 3 is empty
    silence = kaldi_fbank(torch.zeros(16000))
    assert silence.shape == (98, 128) and torch.isfinite(silence).all()
    assert torch.equal(silence, torch.full_like(silence, FLOOR))
    assert float(torch.tensor(LOG_FLOOR).log()) == pytest.approx(FLOOR)
    assert (outputs["fbank128/chirp_3s"][:, 3] == FLOOR).all()


def test_frame_counts_snip_edges():
    assert [num_frames(n) for n in (48000, 16000, 8000, 11829, 163840, 399, 400)] == [298, 98, 48, 72, 1022, 0, 1]
    assert kaldi_fbank(torch.randn(163840)).shape == (1022, 128)
    with pytest.raises(ValueError, match="shorter than one 400-sample frame"):
        kaldi_fbank(torch.randn(399))


def test_batched_equals_single():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4000, generator=g) * 0.3
    batched = kaldi_fbank(x, num_mel_bins=64)
    for i in range(3):
        torch.testing.assert_close(batched[i], kaldi_fbank(x[i], num_mel_bins=64), atol=1e-5, rtol=0)


def test_audiomae_frontend_pads_and_normalises_like_official(fbank_fixture):
    config, inputs, outputs = fbank_fixture
    front = AudioMAEFrontend(target_frames=1024, backend="torch")
    raw = kaldi_fbank(_centered(config, inputs, "fbank128/long_10p24s"))
    got = front.finish(raw)
    assert got.shape == (1, 1024, 128)
    mean, std = NORM_STATS["audioset"]
    loud_from, scale = (-5.0 - mean) / (2 * std), 2 * std
    _assert_fbank_close(got[0], outputs["audiomae/long_10p24s"], loud_from, scale)
    # the two padded frames are 0.0 before normalisation, i.e. -mean / (2 std) after it
    torch.testing.assert_close(got[0, 1022:], torch.full((2, 128), -mean / (2 * std)))
    # the whole pipeline from the waveform computes the same clip mean itself
    full = front(inputs["long_10p24s"])
    _assert_fbank_close(full[0], outputs["audiomae/long_10p24s"], loud_from, scale)


def test_pad_or_crop_and_normalize():
    x = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(pad_or_crop(x, 2), x[:2])
    padded = pad_or_crop(x, 5)
    assert padded.shape == (5, 4) and torch.equal(padded[:3], x) and (padded[3:] == 0).all()
    assert torch.equal(normalize(torch.tensor([1.0]), 1.0, 2.0), torch.tensor([0.0]))
    assert normalize(torch.tensor([5.0]), 1.0, 2.0).item() == 1.0  # (5 - 1) / (2 * 2)


def test_frontend_is_finite_on_silence_and_tiny_clips():
    front = AudioMAEFrontend(target_frames=128, backend="torch")
    for wave in (torch.zeros(16000), torch.zeros(10), torch.full((3000,), 0.25), torch.ones(1)):
        out = front(wave)
        assert out.shape == (1, 128, 128) and torch.isfinite(out).all()
    assert front.samples_for_frames == 400 + 127 * 160


def test_frontend_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown fbank backend"):
        AudioMAEFrontend(backend="librosa")
    with pytest.raises(ValueError, match="unknown window"):
        AudioMAEFrontend(window="kaiser")
    with pytest.raises(ValueError, match="mono waveform"):
        AudioMAEFrontend().fbank(torch.zeros(2, 1000))


@pytest.mark.skipif(torchaudio_kaldi() is None, reason="torchaudio does not import here (no build for this torch)")
def test_torch_and_torchaudio_backends_agree(fbank_fixture):
    _, inputs, _ = fbank_fixture
    for name in ("chirp_3s", "speech_seven", "noise_0p5s"):
        a = AudioMAEFrontend(backend="torch")(inputs[name])
        b = AudioMAEFrontend(backend="torchaudio")(inputs[name])
        assert (a - b).abs().max() <= 1e-3

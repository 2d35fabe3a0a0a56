"""Griffin-Lim inversion of the Kaldi log-mel fbank, on real clips (the embedded spoken digits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmim_audio.datasets.spoken_digits import embedded_root
from mmim_audio.fbank import kaldi_fbank, mel_banks
from mmim_audio.frontend import NORM_STATS, normalize
from mmim_audio.griffin_lim import _istft, _stft, fbank_to_waveform, mel_to_power, spectral_convergence
from mmim_audio.io import load_audio

BOUND = 0.08  # spectral convergence of the mel magnitudes after 64 iterations (measured: 0.030)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    """About a second of real speech: three embedded clips end to end, mean removed."""
    clips = sorted(embedded_root().glob("*.flac"))[:3]
    x = torch.cat([load_audio(str(c), 16000) for c in clips])
    return x - x.mean()


def mel_magnitude(fbank: torch.Tensor) -> torch.Tensor:
    return fbank.exp().sqrt()


def test_griffin_lim_waveform_has_the_input_fbank(speech):
    fbank = kaldi_fbank(speech)
    wave = fbank_to_waveform(fbank, iterations=64)
    assert wave.shape == (400 + 160 * (fbank.shape[0] - 1),) and torch.isfinite(wave).all()
    again = kaldi_fbank(wave)
    assert again.shape == fbank.shape
    sc = spectral_convergence(mel_magnitude(again), mel_magnitude(fbank))
    assert sc < BOUND
    assert float((again - fbank).abs().mean()) < 0.4  # log-mel units
    assert 0.5 < float(wave.abs().max() / speech.abs().max()) < 2.0  # the level is kept
    # what a broken inversion gives: random phase only, or the pre-emphasis left in the magnitudes
    for broken in (dict(iterations=0), dict(iterations=64, preemphasis=0.0)):
        wave = fbank_to_waveform(fbank, **broken)
        wrong = spectral_convergence(mel_magnitude(kaldi_fbank(wave)), mel_magnitude(fbank))
        assert wrong > 2 * BOUND, broken


def test_normalised_model_scale_round_trips_and_is_deterministic(speech):
    mean, std = NORM_STATS["audioset"]
    fbank = kaldi_fbank(speech)
    wave = fbank_to_waveform(normalize(fbank, mean, std), mean=mean, std=std, iterations=32)
    assert spectral_convergence(mel_magnitude(kaldi_fbank(wave)), mel_magnitude(fbank)) < BOUND
    assert torch.equal(wave, fbank_to_waveform(normalize(fbank, mean, std), mean=mean, std=std, iterations=32))
    with pytest.raises(ValueError, match="NaN"):
        fbank_to_waveform(torch.full((10, 128), float("nan")))


def test_mel_inversion_is_non_negative_and_fits_the_energies(speech):
    banks = F.pad(mel_banks(128, 512, 16000.0), (0, 1))
    energies = kaldi_fbank(speech).exp()
    power = mel_to_power(energies, banks)
    assert power.shape == (energies.shape[0], 257) and (power >= 0).all()
    assert power[:, banks.sum(0) == 0].abs().max() == 0  # bins no filter covers stay silent
    assert spectral_convergence((power @ banks.T).sqrt(), energies.sqrt()) < 0.01
    silence = mel_to_power(torch.full((5, 128), torch.finfo(torch.float32).eps), banks)
    assert torch.isfinite(silence).all()


def test_overlap_add_inverts_the_kaldi_framed_stft(speech):
    window = torch.hann_window(400, periodic=False)
    x = speech[: 400 + 160 * 49]
    y = _istft(_stft(x, window, 160, 512), window, 160, 512)
    torch.testing.assert_close(y[200:-200], x[200:-200], atol=1e-5, rtol=0)

"""Build the embedded spoken-digit set shipped in ``mmim_audio/data/spoken_digits/``.

Each clip is one English digit word ("zero" ... "nine") synthesised by espeak-ng in one of 16
voices (8 English accents x 2 voice variants), three times per voice at different speaking rates
and pitches, trimmed of leading/trailing silence and resampled to 16 kHz 16-bit mono FLAC by sox
(no dither, so the build is repeatable). Four voices are held out as the ``test`` split, so the
probe measures recognition of digits spoken by unseen voices.

Needs ``espeak-ng`` and ``sox`` (Debian: ``apt-get install espeak-ng sox``); users of mmim do
not: the FLAC files are committed. Re-running it with the same espeak-ng/sox/libFLAC versions
gives byte-identical files (espeak-ng 1.51, SoX 14.4.2 were used).

    python plugins/audio/scripts/build_embedded_digits.py [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc"]
VARIANTS = [("m1", "f2"), ("m3", "f4"), ("m2", "f1"), ("m4", "f3"),
            ("m7", "f5"), ("m6", "f2"), ("m5", "f4"), ("m3", "f1")]
VOICES = [f"{accent}+{v}" for accent, pair in zip(ACCENTS, VARIANTS) for v in pair]
TEST_VOICES = {"en-gb-scotland+f1", "en-029+m7", "en-gb-x-gbcwmd+m5", "en-us-nyc+f1"}  # held out: unseen voices
RENDITIONS = 3
SAMPLE_RATE = 16000
SEED = 20261123
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mmim_audio" / "data" / "spoken_digits"


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")


def synthesise(word: str, voice: str, speed: int, pitch: int, out: Path, tmp: Path) -> None:
    """espeak-ng -> 22.05 kHz WAV -> sox: trim silence, 16 kHz, 16-bit FLAC (compression 8, no dither)."""
    wav = tmp / "clip.wav"
    _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), word])
    _run(["sox", "-D", str(wav), "-C", "8", "-r", str(SAMPLE_RATE), "-b", "16", str(out),
          "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse"])


def build(out: Path) -> list[dict[str, str]]:
    """Write every clip and ``index.csv`` into ``out`` (emptied first); return the index rows."""
    if not TEST_VOICES <= set(VOICES):
        raise ValueError(f"test voices {sorted(TEST_VOICES - set(VOICES))} are not among the voices")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install espeak-ng sox")
    if out.exists():
        for old in out.glob("*.flac"):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for vi, voice in enumerate(VOICES):
            for label, word in enumerate(DIGITS):
                for r in range(RENDITIONS):
                    speed, pitch = int(rng.integers(130, 211)), int(rng.integers(25, 76))
                    name = f"{label}_{word}_v{vi:02d}_r{r}.flac"
                    synthesise(word, voice, speed, pitch, out / name, Path(tmp))
                    split = "test" if voice in TEST_VOICES else "train"
                    rows.append({"file": name, "label": str(label), "word": word, "voice": voice,
                                 "speed": str(speed), "pitch": str(pitch), "split": split})
    with open(out / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    rows = build(args.out)
    size = sum(p.stat().st_size for p in args.out.glob("*.flac"))
    n_test = sum(r["split"] == "test" for r in rows)
    print(f"{len(rows)} clips ({len(rows) - n_test} train / {n_test} test) in {args.out}, {size / 1e6:.2f} MB of FLAC")


if __name__ == "__main__":
    main()

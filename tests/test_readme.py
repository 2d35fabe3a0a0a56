"""The README's test command is what CI runs, and the README shows the main job."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    test_line = next(line for line in readme.splitlines() if "pytest" in line and line.startswith("pip install"))
    install, _, run = test_line.partition(" && ")
    assert install in ci and run.strip() in ci.split(), f"{test_line!r} is not what .ci/run does"
    assert "mmim train --modality image" in readme

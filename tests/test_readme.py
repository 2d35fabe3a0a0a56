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


def _sample_output() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("$ mmim train --modality image")
    return readme[start:readme.index("```", start)].strip().splitlines()[1:]


def test_readme_sample_output_is_what_the_run_prints(capsys):
    """The README's sample of the main job: each step line is what the progress output prints for
    its figures, the final loss is the last step line's, and the table is the one the evaluated
    figures give; the header counts the steps the step lines count to."""
    import re

    from mmim.engine.progress import Progress
    from mmim.eval.protocols import format_results

    lines = _sample_output()
    step = re.compile(r"step (\d+)/(\d+) epoch (\d+) loss ([\d.]+) lr ([\d.e+-]+) ([\d.]+) samples/s ([\d.e+-]+) TFLOP/s")
    steps = [m for line in lines if (m := step.fullmatch(line))]
    assert len(steps) >= 2, "the sample shows step lines with the TFLOP/s column"
    for m in steps:
        progress = Progress(int(m[2]), enabled=True)
        progress.update(int(m[1]), {"epoch": int(m[3]), "loss": float(m[4]), "lr": float(m[5]),
                                    "samples_per_s": float(m[6]), "tflops_per_device": float(m[7])})
        assert capsys.readouterr().err.strip() == m[0]
    total = int(steps[-1][2])
    assert int(steps[-1][1]) == total
    header = next(line for line in lines if "run directory" in line)
    assert f", {total} steps," in header
    trained = next(line for line in lines if line.startswith("trained "))
    assert f"trained {total} steps" in trained and f"final loss {steps[-1][4]}," in trained
    evaluated = {}
    for line in lines:
        if m := re.fullmatch(r"mmim: evaluated the (\w+) encoder on \S+ train/test samples in [\d.]+s: (.*)", line):
            evaluated[m[1]] = {k: float(v) for k, v in (part.split() for part in m[2].split(", "))}
    assert set(evaluated) == {"trained", "random_init"}
    table = format_results(evaluated).splitlines()
    assert lines[-len(table):] == table
    readme = (ROOT / "README.md").read_text()
    gain = 100 * (evaluated["trained"]["knn"] - evaluated["random_init"]["knn"])
    assert f"+{gain:.1f} points k-NN" in readme

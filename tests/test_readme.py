"""The README's `$ hybrenet ...` examples are real output: rerun them and compare."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from hybrenet_jax.cli import main

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
#: examples that need a trained run directory (covered by the export tests instead)
NEEDS_A_RUN = ("export",)


def _examples() -> list[tuple[str, str]]:
    examples = []
    for block in re.findall(r"```text\n(.*?)```", README.read_text(), re.S):
        lines = block.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("$ ")] + [len(lines)]
        for start, end in zip(starts, starts[1:]):
            command = lines[start][2:]
            if command.startswith("hybrenet ") and command.split()[1] not in NEEDS_A_RUN:
                examples.append((command, "\n".join(lines[start + 1:end]).strip()))
    return examples


EXAMPLES = _examples()


def test_readme_has_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("command, expected", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_readme_example_output_is_current(command, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    main(shlex.split(command)[1:])
    captured = capsys.readouterr()
    assert (captured.out + captured.err).strip() == expected

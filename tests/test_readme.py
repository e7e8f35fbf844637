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


def _readme_name_column() -> list[str]:
    """Backticked names in the first column of the README's model-string NAME table (an
    ``(e.g. ...)`` aside excluded)."""
    text = README.read_text()
    table = text[text.index("| NAME | network |"):].split("\n\n", 1)[0].splitlines()[2:]
    names = []
    for row in table:
        first = row.split("|")[1].split("(e.g.")[0]
        names += re.findall(r"`([^`]+)`", first)
    return names


def test_readme_name_table_is_the_registry():
    """The README lists exactly the registered name forms (``families.NAMES``), which also
    drive the parser, its errors and ``--help``."""
    from hybrenet_jax.families import NAMES

    assert sorted(_readme_name_column()) == sorted(form.form for form in NAMES)


def test_every_registered_name_builds_and_help_lists_it(capsys):
    from hybrenet_jax.cli import EPILOG
    from hybrenet_jax.families import NAMES
    from hybrenet_jax.model_string import spec_from_model_string

    examples = {"wrnDxK": "wrn22x8", "hrn-AxBxCx": "hrn-2x5x3x", "stagech-SxSxSx": "stagech-3x3x3x"}
    for form in NAMES:
        assert form.form in EPILOG
        for name in examples.get(form.form, form.form).split("/"):
            full = name if "-" not in form.form or name.count("-") else \
                form.form.split("-")[0] + "-" + name
            spec = spec_from_model_string(full)
            assert spec.num_stages >= 3, full

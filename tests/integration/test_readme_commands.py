"""Every command line the README shows parses as documented (flags exist, numbers and KEY VALUE pairs land where
the README says): each is handed to its command's own parser, which is stopped right after parsing."""
import argparse
import importlib
import re
import shlex

import pytest
from conftest import REPO

from clip_convpass.cli.command import COMMANDS
from clip_convpass.legacy import LEGACY_MODULES


def readme_commands():
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = re.sub(r"\[--[^]]*\]", "", line.split("  #")[0]).strip()  # [--optional] notation
            if "clip-convpass " in line or "python -m clip_convpass" in line:
                lines.append(line)
    return lines


def module_and_argv(line):
    words = shlex.split(line.replace("$W", "W").replace("~", "HOME"))
    for i, word in enumerate(words):
        if word.endswith("clip-convpass"):
            command, rest = words[i + 1], words[i + 2:]
            if command not in COMMANDS:
                return None, None
            return COMMANDS[command][0], (["--eval-only", *rest] if command == "eval" else rest)
        if word == "-m" and words[i + 1].startswith("clip_convpass"):
            name = words[i + 1]
            short = name.split(".", 1)[1] if "." in name else ""
            if short in LEGACY_MODULES:
                target, main = LEGACY_MODULES[short]
                name = f"clip_convpass.{main or target}"
            return name, words[i + 2:]
    return None, None


class Parsed(Exception):
    pass


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_line_parses(line, monkeypatch):
    module, argv = module_and_argv(line)
    if module is None:
        pytest.skip("not a parsed command")
    seen = {}
    for method in ("parse_args", "parse_intermixed_args"):
        original = getattr(argparse.ArgumentParser, method)

        def stop(self, args=None, namespace=None, _original=original):
            seen["ns"] = _original(self, args, namespace)
            raise Parsed

        monkeypatch.setattr(argparse.ArgumentParser, method, stop)
    main = importlib.import_module(module).main
    try:
        main(argv)
    except Parsed:
        pass
    except SystemExit as e:  # --help prints and exits 0; a parse error exits 2
        assert e.code == 0, line
    ns = vars(seen.get("ns", argparse.Namespace()))
    if "--seeds" in argv:  # numbers stay with --seeds; a KEY VALUE pair after them is an override
        i = argv.index("--seeds") + 1
        numbers = []
        while i < len(argv) and argv[i].isdigit():
            numbers.append(int(argv[i]))
            i += 1
        assert ns["seeds"] == numbers, line
    keys = [w for w in argv if re.fullmatch(r"[A-Z_]+(\.[A-Z0-9_]+)+", w)]
    if keys and "opts" in ns:
        assert [k for k in ns["opts"] if k in keys] == keys, line


def test_the_readme_shows_the_documented_grid_form():
    assert any("--seeds 1 MODEL.PRETRAINED" in line for line in readme_commands())

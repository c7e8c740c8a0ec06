"""The command lines the docs quote work: every `python train.py ...` / `python evaluate.py ...` of README.md
and every page under docs/ (code blocks and inline code) composes with Hydra and passes vprlab's config
checks, every swept value of a multirun once (through the code a sweep checks its jobs with before it
starts), with data paths
pointed at test folders; every quoted `vprlab ...` line parses with the vprlab CLI's own parsers (nothing
runs). A quoted command the text says "fails", "stops" or "is refused" must fail.

How a quoted line is read: `\\` continues it, `#` starts a comment, `make` and other lines are not
commands, `<placeholder>` and `...` values (and, inline, an empty `key=`) are filled in (a config group: its first option; a file: a
test path; train.py's ckpt_path: left out, the checkpoint is not here), `[key=value]` is an optional
argument (kept), an option the page has the reader write (`<!-- example: x.yaml -->`) is skipped, and in inline code `vprlab models list|download|export` names three commands (each
checked with --help)."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CONF, REPO
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict, read_write

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]  # the manual, examples and results pages
PLACEHOLDER = "PLACEHOLDER"
_PLACEHOLDER = re.compile(r"<[^<>`\n]+>")
_EXPECTED_FAILURE = re.compile(r"^[\s*_]*(fails|is refused|are refused|stops)\b")
_HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                           "--config-dir", "-cd", "--info", "-i"}
_SEPARATORS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&"}


@dataclass(frozen=True)
class Quoted:
    where: str          # docs/x.md:12
    text: str           # the line as quoted
    program: str        # train / evaluate / vprlab
    args: tuple         # its arguments
    inline: bool
    expect_failure: bool

    def __str__(self) -> str:
        return f"{self.where}: `{self.text}`"


def _tokens(text: str) -> list[str] | None:
    try:
        return shlex.split(_PLACEHOLDER.sub(PLACEHOLDER, text), comments=True)
    except ValueError:  # unbalanced quotes: prose, not a command
        return None


def parse_command(text: str, inline: bool) -> tuple[str, list[str]] | None:
    """(program, arguments) of a quoted command line, or None when the line is not a train.py,
    evaluate.py or vprlab command."""
    tokens = _tokens(text.strip().removeprefix("$ "))
    if not tokens:
        return None
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):  # VAR=value before the command
        tokens.pop(0)
    for i, token in enumerate(tokens):
        if token in _SEPARATORS:
            tokens = tokens[:i]
            break
    if not tokens:
        return None
    head = tokens[0]
    if head == "vprlab":
        return "vprlab", tokens[1:]
    if re.fullmatch(r"\S*python3?", head) and tokens[1:3] == ["-m", "vprlab"]:
        return "vprlab", tokens[3:]
    # python train.py / .venv/bin/python evaluate.py / torchrun ... train.py / (inline) train.py ckpt_path=...
    launchers = re.fullmatch(r"\S*python3?|torchrun|\$PY", head) is not None
    for i, token in enumerate(tokens):
        name = token.rsplit("/", 1)[-1]
        if name in ("train.py", "evaluate.py") and (launchers or (i == 0 and inline and len(tokens) > 1)):
            return name.removesuffix(".py"), tokens[i + 1:]
        if not launchers or (not token.startswith("-") and i > 0 and head != "torchrun"):
            break
    return None


def _logical_code_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """(line number, text) of a code block's lines, `\\` continuations joined."""
    out, i = [], 0
    while i < len(lines):
        number, text = start + i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        out.append((number, text))
        i += 1
    return out


def quoted_commands(path: Path) -> list[Quoted]:
    """Every command line quoted in the Markdown file ``path``: fenced code blocks line by line, and
    inline code spans (which may wrap over two lines of the paragraph)."""
    rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    text = path.read_text()
    lines = text.splitlines()
    found: list[Quoted] = []
    prose: list[tuple[int, str]] = []  # (line number, line) outside code blocks
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith("```")), len(lines))
            for number, line in _logical_code_lines(lines[i + 1:end], i + 2):
                command = parse_command(line, inline=False)
                if command:
                    found.append(Quoted(f"{rel}:{number}", line.strip(), command[0], tuple(command[1]), False, False))
            i = end + 1
            continue
        prose.append((i + 1, lines[i]))
        i += 1
    # Inline code: over paragraphs (blank lines end them), so a span may wrap.
    paragraph: list[tuple[int, str]] = []
    for number, line in [*prose, (0, "")]:
        if line.strip():
            paragraph.append((number, line))
            continue
        if paragraph:
            joined = "\n".join(l for _, l in paragraph)
            for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", joined):
                span = " ".join(match.group(1).split())
                command = parse_command(span, inline=True)
                if command:
                    number_at = paragraph[joined.count("\n", 0, match.start())][0]
                    failing = _EXPECTED_FAILURE.match(joined[match.end():]) is not None
                    found.append(Quoted(f"{rel}:{number_at}", span, command[0], tuple(command[1]), True, failing))
        paragraph = []
    return found


ALL = [q for path in DOC_FILES for q in quoted_commands(path)]
HYDRA = [q for q in ALL if q.program in ("train", "evaluate")]
VPRLAB = [q for q in ALL if q.program == "vprlab"]


# --- the extractor itself --------------------------------------------------------------------------------


def test_the_extractor_reads_what_the_docs_quote(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(
        "Run `python train.py experiment=quickstart` first; `train.py experiment=nope` fails.\n"
        "A wrapped span: `python evaluate.py\nbenchmark=[pitts30k_test]` and a name: `evaluate.py`.\n\n"
        "```bash\n"
        "make quickstart                       # not a command we check\n"
        "python train.py sweep=boq_grid \\\n"
        "    seed=1,2   # two seeds\n"
        "VPRLAB_DATA_DIR=/d .venv/bin/python evaluate.py ckpt_path=<ckpt> | tee log\n"
        "python -m vprlab report sweep outputs/x --out r   # a report\n"
        "pip install vprlab\n"
        "```\n"
        "Also `vprlab models list|export` and ``vprlab literal``.\n"
    )
    found = quoted_commands(doc)
    got = [(q.where.rsplit(":", 1)[1], q.program, list(q.args), q.expect_failure) for q in found]
    assert got == [
        ("7", "train", ["sweep=boq_grid", "seed=1,2"], False),
        ("9", "evaluate", ["ckpt_path=PLACEHOLDER"], False),
        ("10", "vprlab", ["report", "sweep", "outputs/x", "--out", "r"], False),
        ("1", "train", ["experiment=quickstart"], False),
        ("1", "train", ["experiment=nope"], True),
        ("2", "evaluate", ["benchmark=[pitts30k_test]"], False),
        ("13", "vprlab", ["models", "list|export"], False),
    ], got


def test_the_docs_quote_commands():
    """The check reads something: the README's and the manual's commands (a broken extractor finds none)."""
    assert len(HYDRA) > 40 and len(VPRLAB) > 25
    assert any(q.where.startswith("README.md") for q in HYDRA) and any(q.args[:1] == ("report",) for q in VPRLAB)


# --- train.py / evaluate.py: compose and check -----------------------------------------------------------


def _first_option(group: str) -> str | None:
    folder = CONF / group
    options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if group == "pretrained":  # `pretrained=<name>` is quoted for train.py too: a model that fine-tunes (not AnyLoc)
        from vprlab.pretrained.catalog import published_model

        options = [o for o in options if published_model(o).configs or published_model(o).architecture] or options
    return options[0] if options else None


def hydra_overrides(q: Quoted, data: Path) -> tuple[str, list[str]]:
    """(config name, overrides) of a quoted train.py/evaluate.py line, placeholders filled in and /data/
    paths moved under ``data``."""
    config_name, overrides = q.program, []
    args = list(q.args)
    while args:
        token = args.pop(0)
        if token in ("--config-name", "-cn") and args:
            config_name = args.pop(0)
            continue
        if token in _HYDRA_FLAGS_WITH_VALUE:
            if args and not args[0].startswith("-") and "=" not in args[0]:
                args.pop(0)
            continue
        if token.startswith("-") or token in ("...", "…"):
            continue
        if token.startswith("[") and token.endswith("]") and "=" in token and not token.split("=", 1)[0].endswith("]"):
            token = token[1:-1]  # [key=value]: an optional argument
        if "=" not in token:
            continue
        key, value = token.split("=", 1)
        if PLACEHOLDER in value or value in ("...", "…", "FILE") or (q.inline and value == ""):  # `pretrained=`: a name
            group = key.lstrip("+~")
            if (CONF / group).is_dir():
                value = _first_option(group)
            elif group == "ckpt_path" and q.program == "train":
                continue  # resuming needs the checkpoint itself; the rest of the line is still checked
            else:
                value = str(data / "placeholder" / value.replace(PLACEHOLDER, "x").strip("/").replace("...", "x"))
        if value.startswith("/data/"):
            value = str(data / value.removeprefix("/data/"))
        overrides.append(f"{key}={value}")
    return config_name, overrides


@pytest.fixture(scope="module")
def doc_data(tmp_path_factory):
    """paths.data_dir for the docs' commands: the dataset roots the configs default to exist (empty: the
    checks look for the folder; nothing is read)."""
    data = tmp_path_factory.mktemp("docs") / "data"
    for folder in ("gsv-cities", "synthetic/gsv", "nordland_real/gsv"):
        (data / folder).mkdir(parents=True)
    return data


_CHECKED: dict[tuple, str | None] = {}  # (program, overrides) -> the error; a command quoted twice is checked once


def check_hydra_command(q: Quoted, data: Path) -> None:
    """Compose the quoted command and run vprlab's checks as its sweep callback does before a sweep
    starts (a multirun: every swept value once); raises what a user would see."""
    from vprlab.commands.sweep import JOB_CHECKS, check_job_config, check_sweep

    config_name, overrides = hydra_overrides(q, data)
    for override in overrides:  # a dataset root the line names: a test folder (the checks look for it)
        if override.startswith("dataset.root=") and override.split("=", 1)[1].startswith(str(data)):
            Path(override.split("=", 1)[1]).mkdir(parents=True, exist_ok=True)
    overrides += [f"paths.data_dir={data}", f"paths.log_dir={data.parent / 'outputs'}"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose(config_name=config_name, overrides=fixed, return_hydra_config=True)
        if len(fixed) == len(overrides) and not master.hydra.sweeper.get("params"):
            check_job_config(master, JOB_CHECKS[config_name])  # one run: the composed config is the job's
            return
        with read_write(master.hydra), open_dict(master.hydra):
            master.hydra.overrides.task = overrides
            master.hydra.job.config_name = config_name
        check_sweep(master, config_name, every_job=False)


@pytest.mark.parametrize("quoted", HYDRA, ids=lambda q: q.where)
def test_quoted_train_and_evaluate_commands_compose(quoted, doc_data, monkeypatch):
    monkeypatch.delenv("GSV_CITIES_ROOT", raising=False)
    monkeypatch.delenv("VPRLAB_DATA_DIR", raising=False)
    page = (REPO / quoted.where.rsplit(":", 1)[0]).read_text()
    for arg in quoted.args:  # a config the page has the reader write (docs/extending.md's examples)
        group, _, option = arg.partition("=")
        if (CONF / group).is_dir() and option and not (CONF / group / f"{option}.yaml").is_file() \
                and f"<!-- example: {option}.yaml -->" in page:
            pytest.skip(f"{quoted}: conf/{group}/{option}.yaml is the page's example (tests/models/test_extending.py)")
    key = (quoted.program, quoted.args)
    if key not in _CHECKED:
        try:
            check_hydra_command(quoted, doc_data)
            _CHECKED[key] = None
        except Exception as error:  # noqa: BLE001 - any failure is the message of this test
            _CHECKED[key] = f"{type(error).__name__}: {error}"
    if _CHECKED[key] is not None:
        if quoted.expect_failure:
            return
        pytest.fail(f"{quoted}\n  does not compose or fails vprlab's config checks:\n  {_CHECKED[key]}")
    if quoted.expect_failure:
        pytest.fail(f"{quoted}\n  the docs say this fails, but it composes and passes the checks")


# --- vprlab: parse with its own parsers -------------------------------------------------------------------


class _Parsed(BaseException):
    """Raised by the patched parse_args once the arguments parsed: the subcommand never runs."""


def parse_vprlab(args: list[str]) -> tuple[int, str]:
    """(0, "") when ``vprlab args`` parses (or its --help prints), else (exit status, what it printed)."""
    from vprlab.commands.cli import main

    original = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            argparse.ArgumentParser.parse_args = parse_only
            try:
                code = main(list(args))
            finally:
                argparse.ArgumentParser.parse_args = original
    except _Parsed:
        return 0, ""
    except SystemExit as exit_:
        code = exit_.code
    return (0, "") if code in (0, None) else (int(code) if isinstance(code, int) else 1, (err.getvalue() or out.getvalue()).strip())


def _vprlab_lines(q: Quoted) -> list[list[str]]:
    """The argument lists to parse: an inline name of commands (`vprlab models list|download|export`) is
    one `--help` per command; anything else is parsed as given."""
    words = [w for w in q.args if w not in ("...", "…")]
    if q.inline and words and all(re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", w) for w in words):
        lines = [[]]
        for word in words:
            lines = [[*line, option] for line in lines for option in word.split("|")]
        return [[*line, "--help"] for line in lines]
    return [words]


def _parse_with_placeholders(args: list[str]) -> tuple[int, str]:
    """parse_vprlab, a `<placeholder>` where argparse wants one of its choices given the first choice."""
    code, message = parse_vprlab(args)
    while code == 2 and f"invalid choice: '{PLACEHOLDER}'" in message and PLACEHOLDER in args:
        choices = re.search(r"choose from '([^']+)'", message)
        if not choices:
            break
        args = list(args)
        args[args.index(PLACEHOLDER)] = choices.group(1)
        code, message = parse_vprlab(args)
    return code, message


@pytest.mark.parametrize("quoted", VPRLAB, ids=lambda q: q.where)
def test_quoted_vprlab_commands_parse(quoted):
    for args in _vprlab_lines(quoted):
        code, message = _parse_with_placeholders(args)
        if quoted.expect_failure:
            assert code != 0, f"{quoted}\n  the docs say this fails, but it parses"
            continue
        assert code == 0, f"{quoted}\n  `vprlab {' '.join(args)}` does not parse (exit {code}):\n  {message[-1500:]}"


def test_vprlab_parse_check_catches_a_bad_line():
    assert parse_vprlab(["report", "sweep", "outputs/x"]) == (0, "")
    code, message = parse_vprlab(["report", "heatmap", "outputs/x"])
    assert code == 2 and "invalid choice: 'heatmap'" in message
    assert parse_vprlab(["nosuchcommand"])[0] == 2


def test_benchmarks_help_is_whole_sentences(capsys):
    """`vprlab benchmarks --help` printed the first line of its description only, stopping mid-sentence."""
    from vprlab.commands.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["benchmarks", "--help"])
    assert exit_.value.code == 0
    description = " ".join(capsys.readouterr().out.split("options:")[0].split("\n", 2)[-1].split())
    assert "--no-check``: only whether the root exists)." in description and "and whether its data is here" in description
    assert description.endswith("or files changed since (``changed: ...``).")


def test_hydra_check_catches_a_bad_line(doc_data, monkeypatch):
    """What the check would say about broken quotes: a MixVPR whose map size the default images do not
    give (one run, and one job of a multirun), and an option that does not exist."""
    monkeypatch.delenv("GSV_CITIES_ROOT", raising=False)

    def quoted(text: str) -> Quoted:
        program, args = parse_command(text, inline=False)
        return Quoted("x.md:1", text, program, tuple(args), False, False)

    with pytest.raises(Exception, match="MixVPR is built for 20x20"):
        check_hydra_command(quoted("python train.py aggregator=mixvpr"), doc_data)
    with pytest.raises(Exception, match=r"(?s)1 of the sweep's 3 checked points .*aggregator=mixvpr.*MixVPR is built for 20x20"):
        check_hydra_command(quoted("python train.py sweep=aggregators experiment=synthetic_compare aggregator=boq,gem,mixvpr"),
                            doc_data)
    with pytest.raises(Exception, match="nosuch"):
        check_hydra_command(quoted("python evaluate.py aggregator=nosuch"), doc_data)

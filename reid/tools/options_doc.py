"""The options reference, ``docs/options.md``, generated from the typed schemas and the shipped YAML files.

Over 400 lines on purpose: reading the sources (YAML comments, docstrings, signatures) and
formatting the reference are one generator whose test compares its whole output.

Every option of a config group (``data``, ``model``, ``model.net``, ``eval``, ``trainer``, the
top-level keys...) gets one row: its type, its default, its valid range or choices, and one line
of help. The type, range and choices come from the dataclasses of :mod:`reid.conf.schema` (for the
project's own classes, derived from their signatures: :mod:`reid.conf.derive`); the default
is the value of the group's ``conf/<group>/default.yaml`` (the file every option of the group
starts from), else the schema's; the help is the YAML comment above or beside the key, else the
comment beside the schema field, else the ``Args:`` entry of the class the group configures.

``python -m reid.tools.options_doc`` rewrites ``docs/options.md``; ``check=true`` only compares
(exit status 1 when the file is stale; ``tests/test_docs.py`` does the same in memory).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf

from reid.conf import schema
from reid.conf.store import GROUP_FIELDS
from reid.conf.tool import option, run_tool
from reid.conf.validate import OPTIMIZER_RANGES

CONF = Path(__file__).resolve().parents[1] / "conf"
#: the command that rewrites the file, named in its header and in the test's failure
COMMAND = "python -m reid.tools.options_doc"
DEFAULT_OUT = "docs/options.md"
HYDRA_KEYS = frozenset({"_target_", "_partial_"})
# an inline comment that only lists the choices (``# random | identity``) adds nothing to the choices column
_CHOICES_ONLY = re.compile(r"^[\w.-]+(\s*\|\s*[\w.-]+)+$")
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*)\s*:(.*)$")
_ROLE = re.compile(r":(?:class|func|mod|data|meth|attr|obj):`~?([^`]+)`")


@dataclass(frozen=True)
class Section:
    """One table of the reference: the options of ``schema`` found at ``path`` of the composed config."""

    path: str
    schema: type
    yaml_files: tuple[str, ...]
    yaml_prefix: str = ""
    title: str = ""
    #: only these fields (a subclass's own options); all when empty
    only: tuple[str, ...] = ()
    #: a class whose ``Args:`` docstring explains the options when no comment does
    documented_by: str | None = None


SECTIONS: tuple[Section, ...] = (
    Section(
        "",
        schema.RunConfig,
        ("train.yaml", "evaluate.yaml"),
        title="Top-level keys (`train.py`, `evaluate.py`)",
    ),
    Section("paths", schema.PathsConfig, ("paths/default.yaml",)),
    Section("data", schema.ReIDDataConfig, ("data/default.yaml",), documented_by="reid.lit.datamodule.ReIDDataModule"),
    Section(
        "data.pose", schema.PoseConfig, ("data/default.yaml",), "pose", documented_by="reid.data.index.keypoint_options"
    ),
    Section(
        "data.strips", schema.StripsConfig, ("data/default.yaml",), "strips", documented_by="reid.pose.strip_regions"
    ),
    Section(
        "data.augment",
        schema.AugmentConfig,
        ("data/default.yaml",),
        "augment",
        documented_by="reid.data.transforms.SampleTransform",
    ),
    Section(
        "data",
        schema.ImageNetDataConfig,
        ("data/imagenet.yaml",),
        title="`data` with `data=imagenet` (ImageNet pre-training): its own options",
        only=("framing",),
        documented_by="reid.lit.imagenet.ImageNetDataModule",
    ),
    Section("model", schema.ReIDModuleConfig, ("model/default.yaml",), documented_by="reid.lit.module.ReIDModule"),
    Section(
        "model.net", schema.NetConfig, ("model/default.yaml",), "net", documented_by="reid.models.AttentionReIDNet"
    ),
    Section(
        "model",
        schema.ClassificationModuleConfig,
        (),
        title="`model` with `experiment=imagenet_pretrain`: its own options",
        only=("top_k",),
        documented_by="reid.lit.imagenet.ClassificationModule",
    ),
    Section("eval", schema.EvalConfig, ("eval/default.yaml",)),
    Section("eval.pictures", schema.PicturesConfig, ("eval/default.yaml",), "pictures"),
    Section("trainer", schema.TrainerConfig, ("trainer/default.yaml",)),
)

#: the nodes with a ``_target_`` whose keys are listed from the YAML file (their schema only names the target)
TARGET_NODES = (
    ("model.optimizer", "model/default.yaml", "optimizer"),
    ("model.scheduler", "model/default.yaml", "scheduler"),
)


# ---------------------------------------------------------------------------- reading the sources


def yaml_comments(text: str) -> dict[str, str]:
    """Key path -> the comment above the key (joined into one line) and beside it, for every key of a YAML file.

    The file's first line, when it is a comment, describes the file and belongs to no key.
    """
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    lines = text.splitlines()
    if lines and lines[0].lstrip().startswith("#"):
        lines = lines[1:]
    for line in lines:
        stripped = line.strip()
        if not stripped:
            above = []
            continue
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if not match:  # a list item, a continuation
            above = []
            continue
        indent, key, rest = len(match[1]), match[2], match[3]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([name for _, name in stack] + [key])
        beside = _inline_comment(rest)
        if beside and _CHOICES_ONLY.match(beside):
            beside = ""
        text_ = " ".join(part for part in (" ".join(above), beside) if part)
        if text_:
            comments[path] = text_
        above = []
        stack.append((indent, key))
    return comments


def _inline_comment(rest: str) -> str:
    """The comment after a YAML value (``# ...`` preceded by a space, outside quotes)."""
    quote = ""
    for index, char in enumerate(rest):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or rest[index - 1].isspace()):
            return rest[index + 1 :].strip()
    return ""


def schema_comments(cls: type) -> dict[str, str]:
    """Field name -> the ``#`` comment above or beside the field in the dataclass's source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        number = node.lineno - 1
        while number >= 1 and lines[number - 1].strip().startswith("#"):
            above.insert(0, by_line.get(number, ""))
            number -= 1
        text = " ".join(part for part in (" ".join(above), by_line.get(node.lineno, "")) if part)
        if text:
            found[node.target.id] = text
    return found


def docstring_args(target: str | None) -> dict[str, str]:
    """Parameter name -> its ``Args:`` entry in the docstring of ``target`` (a dotted class path), one line each."""
    if not target:
        return {}
    module, _, name = target.rpartition(".")
    doc = inspect.getdoc(getattr(importlib.import_module(module), name)) or ""
    entries: dict[str, list[str]] = {}
    current: list[str] = []
    inside = False
    for line in doc.splitlines():
        if line.strip() == "Args:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):  # the next section (Returns:, Raises:...)
            break
        entry = re.match(r"^    ([\w, ]+?):\s+(.*)$", line)
        if entry and not line.startswith("     "):
            current = [entry[2]]
            for key in entry[1].split(","):
                entries[key.strip()] = current  # one list per entry, shared by the names it documents
        elif current and line.strip():
            current.append(line.strip())
    return {key: " ".join(parts) for key, parts in entries.items()}


def yaml_values(relative: str) -> dict[str, Any]:
    """The values of ``conf/<relative>`` as written (interpolations kept as text)."""
    loaded = OmegaConf.to_container(OmegaConf.load(CONF / relative), resolve=False)
    return {str(key): value for key, value in loaded.items()} if isinstance(loaded, dict) else {}


def _lookup(values: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = values
    for key in path.split(".") if path else []:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


# ---------------------------------------------------------------------------- formatting


def type_name(annotation: Any) -> str:
    """A short name of a schema type: ``int``, ``float or null``, ``[int, int]``, ``list of str``, ``str``..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "any"
    if origin in schema.UNION_ORIGINS:
        names = [type_name(a) for a in args if a is not type(None)]
        text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return type_name(type(args[0]))
    if origin is tuple:
        if args and args[-1] is not Ellipsis:
            return "[" + ", ".join(type_name(a) for a in args) + "]"
        return f"list of {type_name(args[0])}"
    if origin is list:
        return f"list of {type_name(args[0]) if args else 'any'}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(annotation):
        return "group"
    return getattr(annotation, "__name__", str(annotation))


def value_text(value: Any) -> str:
    """A default in Hydra's override syntax: ``[384,192]``, ``null``, ``true``, ``{}``.

    As the config errors write it.
    """
    return schema.override_text(value)


def valid_values(item: dataclasses.Field, annotation: Any) -> str:
    """The range (``[0, 1]``, ``>= 1``) or the choices of an option, as shown in its row."""
    choices = _choices(annotation)
    registry = item.metadata.get("choices")
    if registry:
        module, attribute = registry.split(":")
        choices = [str(name) for name in getattr(importlib.import_module(module), attribute)]
    if choices:
        return ", ".join(f"`{choice}`" for choice in choices)
    valid = item.metadata.get("range")
    if valid is None:
        return ""
    sequence = any(typing.get_origin(a) in (list, tuple) for a in (annotation, *typing.get_args(annotation)))
    return valid.describe() + (" (each)" if sequence else "")


def _choices(annotation: Any) -> list[str]:
    for inner in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(inner) is Literal:
            return [value_text(a) for a in typing.get_args(inner)]
    return []


def _markdown(text: str) -> str:
    """Docstring or comment text as a table cell: rST roles and double backticks as code.

    Outside code spans ``|``, ``<`` (``<run dir>`` is no HTML tag) and ``*`` (no emphasis) are
    escaped; a ``|`` inside a code span ends it for the pipe (GitHub would split the cell there,
    and Python-Markdown shows an escaped one as ``\\|``).
    """
    text = _ROLE.sub(r"`\1`", text).replace("``", "`")
    parts = " ".join(text.split()).split("`")
    for index, part in enumerate(parts):
        if index % 2 == 0:  # outside code spans
            parts[index] = part.replace("<", "&lt;").replace("*", "\\*").replace("|", "\\|")
        else:
            parts[index] = part.replace("|", "`\\|`")
    return "`".join(parts)


def _code(text: str) -> str:
    return _markdown(f"`{text}`") if text else ""


# ---------------------------------------------------------------------------- the document


def _section_rows(section: Section) -> list[tuple[str, str, str, str, str]]:
    hints = typing.get_type_hints(section.schema)
    values: dict[str, Any] = {}
    comments: dict[str, str] = {}
    for relative in section.yaml_files:
        text = (CONF / relative).read_text()
        for path, comment in yaml_comments(text).items():
            comments.setdefault(path, comment)
        for key, value in yaml_values(relative).items():
            values.setdefault(key, value)
    own = schema_comments(section.schema)
    documented = docstring_args(section.documented_by)
    rows = []
    for item in dataclasses.fields(section.schema):
        annotation = hints[item.name]
        if item.name in HYDRA_KEYS or (section.only and item.name not in section.only):
            continue
        if any(dataclasses.is_dataclass(a) for a in (annotation, *typing.get_args(annotation))):
            continue  # a group of its own (a section), or a `_target_` node (listed from the YAML files)
        if section.schema is schema.RunConfig and item.name in (*GROUP_FIELDS, "hydra"):
            continue  # config groups, each a section or a `_target_` group of its own; `hydra` is Hydra's
        key = f"{section.yaml_prefix}.{item.name}" if section.yaml_prefix else item.name
        found, default = _lookup(values, key)
        if not found:
            default = schema._plain(schema._default(item))
        help_text = comments.get(key) or own.get(item.name) or documented.get(item.name, "")
        full = f"{section.path}.{item.name}" if section.path else item.name
        rows.append(
            (
                _code(full),
                type_name(annotation),
                _code(value_text(default)),
                valid_values(item, annotation),
                _markdown(help_text),
            )
        )
    return rows


def _target_rows(path: str, relative: str, prefix: str) -> list[tuple[str, str, str, str, str]]:
    """The keys of a ``_target_`` node as the shipped YAML file sets them (the optimiser's ranges from the schema)."""
    _, node = _lookup(yaml_values(relative), prefix)
    comments = yaml_comments((CONF / relative).read_text())
    rows = []
    for key, value in (node or {}).items():
        if key in HYDRA_KEYS - {"_target_"}:
            continue
        valid = OPTIMIZER_RANGES.get(key) if path == "model.optimizer" else None
        kind = "str" if key == "_target_" else type_name(type(value)) if value is not None else "any"
        if isinstance(value, list):
            kind = f"list of {type_name(type(value[0]))}" if value else "list"
        rows.append(
            (
                _code(f"{path}.{key}"),
                kind,
                _code(value_text(value)),
                valid.describe() if valid else "",
                _markdown(comments.get(f"{prefix}.{key}", "")),
            )
        )
    return rows


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| option | type | default | range / choices | help |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell or "–" for cell in row) + " |" for row in rows]
    return lines


def _intro(section: Section) -> str:
    doc = (inspect.getdoc(section.schema) or "").split("\n\n")[0]
    target = getattr(section.schema, "TARGETS", ())
    text = _markdown(doc)
    return text + (f" Target: `{target[0]}`." if target else "")


def render() -> str:
    """The whole of ``docs/options.md``."""
    lines = [
        "<!-- generated by `" + COMMAND + "` from reid/conf/schema.py and reid/conf: do not edit -->",
        "",
        "# Options reference",
        "",
        "Every option of the run config, by config group, as `python train.py <key>=<value>` (or `evaluate.py`)",
        "takes it. **Type**, **range** and **choices** are those of the typed schemas (`reid/conf/schema.py`), which",
        "Hydra and `reid.conf.validate.validate_config` check before anything is built; the project's own classes",
        "declare theirs once, in their signatures (`Annotated` ranges, `Literal` choices), and **help** is then the",
        "`Args:` entry of their docstrings. **Default** is the value of the group's `conf/<group>/default.yaml` (every",
        "option of the group starts from it; it lists only what differs from the declaration), else the schema's;",
        "a data set's config and its recipe change some of them (`conf/data/synthetic.yaml` and",
        "`conf/recipe/synthetic.yaml` for the default synthetic run: width 0.5, 128×64 crops, 24 epochs...).",
        "`${...}` is an interpolation: the value of that key. The options of callbacks and loggers",
        "(`conf/callbacks/`, `conf/logger/`) are the parameters of their `_target_` classes; any",
        "`pytorch_lightning.Trainer` parameter is also a valid `trainer` key.",
        "",
        f"Regenerate this page with `{COMMAND}` after changing an option, its docstring or a YAML comment;",
        "`tests/test_docs.py` fails while it is stale.",
    ]
    for section in SECTIONS:
        title = section.title or f"`{section.path}`"
        lines += ["", f"## {title}", "", _intro(section), "", *_table(_section_rows(section))]
        if section.path == "model" and not section.only:
            for path, relative, prefix in TARGET_NODES:
                lines += [
                    "",
                    f"### `{path}`",
                    "",
                    "A `_target_` node: its keys are the parameters of the target; "
                    f"these are the ones `{relative}` sets.",
                    "",
                    *_table(_target_rows(path, relative, prefix)),
                ]
    return "\n".join(lines) + "\n"


@dataclass
class OptionsDocOptions:
    """The options of ``python -m reid.tools.options_doc`` (``key=value``)."""

    out: str = option(DEFAULT_OUT, "the Markdown file to write")
    check: bool = option(False, "only compare with the file: exit status 1 when it differs")


def write_options_doc(options: OptionsDocOptions) -> int:
    """Writes the options reference (or, with ``check``, says whether the file is up to date)."""
    text = render()
    out = Path(options.out)
    if options.check:
        current = out.read_text() if out.is_file() else ""
        if current != text:
            print(f"{out} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m reid.tools.options_doc [out=docs/options.md] [check=true]``."""
    return run_tool(write_options_doc, OptionsDocOptions, "options_doc", argv)


if __name__ == "__main__":
    sys.exit(main())

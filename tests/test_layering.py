"""The house's import rules, stated once as data and checked over every module (issue 20 item 5).

``LAYERS`` is docs/ARCHITECTURE.md's pipeline written out: an ordered list of layers, each
naming the modules it holds. A module may import only modules of earlier layers or of its own
layer (imports anywhere in it, inside functions too; relative imports resolved), never a later
one, so ``port`` (every layer of which comes first) never imports ``reproduce``. A layer may
add ``never`` (earlier modules it still must not import) and ``imported_by`` (the only layers
that may import it: the command lines, which only their dispatchers import), and ``alone``
(its modules do not import one another: each command is its own). The test prints every
violating import as ``file:line -> module``. A second test checks that ARCHITECTURE.md names
every module, so the document is the house as it is.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("port", "reproduce")
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"


@dataclass(frozen=True)
class Layer:
    """One stage of the pipeline. ``modules``: dotted names, each covering the module and every
    module below it (``port`` and ``reproduce`` only their ``__init__``), ``a.b.*`` only those
    below; the most specific name a module matches wins."""
    name: str
    modules: tuple[str, ...]
    never: tuple[str, ...] = ()
    imported_by: tuple[str, ...] | None = None
    alone: bool = False


LAYERS = (
    # -- port: the library, one folder a stage (ARCHITECTURE's first pipeline line)
    Layer("foundation", ("port", "port.errors", "port.fileio")),
    Layer("formats", ("port.caffe",)),
    Layer("weights files", ("port.weights",)),
    Layer("semantics and engine", ("port.net",)),
    Layer("run modes", ("port.run",)),
    # the released nets' records and definitions, the registry of names, the published numbers
    Layer("released nets", ("port.models",)),
    # port.weights' names re-exported for users' imports; the project imports port.weights
    Layer("users' re-exports", ("port.models.weights",), imported_by=()),
    Layer("conversion", ("port.convert",)),
    # the released files' records, the downloader, released weights fetched and converted once
    Layer("hub", ("port.hub",)),
    # the builders: a released net's weights="released" goes through port.hub
    Layer("builders", ("port.models.zoo",)),
    # a training net in training mode or with autograd always runs the engine's plain path
    Layer("training", ("port.training",), never=("port.run",)),
    Layer("loader", ("port.load",)),
    Layer("export", ("port.export",)),
    Layer("port command lines' shared helpers", ("port.cli",), imported_by=("port command lines",)),
    Layer("port command lines", ("port.cli.*",), imported_by=("port dispatcher",), alone=True),
    Layer("port dispatcher", ("port.__main__",), imported_by=()),
    # -- reproduce: may import port, never the other way (ARCHITECTURE's second line)
    Layer("datasets", ("reproduce", "reproduce.datasets")),
    Layer("metrics", ("reproduce.metrics",)),
    Layer("splits and verdicts", ("reproduce.splits", "reproduce.verdict")),
    Layer("resolve", ("reproduce.resolve",)),
    Layer("run support", ("reproduce.checkpoint", "reproduce.distributed", "reproduce.palette")),
    Layer("harness", ("reproduce.harness",)),
    Layer("evaluation", ("reproduce.evaluation",)),
    Layer("report", ("reproduce.report",)),
    Layer("demo", ("reproduce.demo",)),
    Layer("training pieces", ("reproduce.training", "reproduce.training.sampling",
                              "reproduce.training.recipes")),
    Layer("training data", ("reproduce.training.data",)),
    Layer("training report", ("reproduce.training.report",)),
    Layer("training event files", ("reproduce.training.tensorboard",)),
    Layer("training run", ("reproduce.training.run",)),
    Layer("reproduce command lines", ("reproduce.training.cli",), imported_by=("reproduce dispatcher",)),
    Layer("reproduce dispatcher", ("reproduce.__main__",), imported_by=()),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The index of the layer whose most specific name covers ``module``."""
    best, best_len = None, -1
    for index, layer in enumerate(LAYERS):
        for name in layer.modules:
            if name.endswith(".*"):
                covers = module.startswith(name[:-1])
            elif name in PACKAGES:  # a package's own __init__ only, never everything in it
                covers = module == name
            else:
                covers = module == name or module.startswith(name + ".")
            if covers and len(name) > best_len:
                best, best_len = index, len(name)
    return best


def imports(path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """Every project module ``path`` imports, anywhere in it, as ``(line, module)``; relative
    imports resolved, ``from package import submodule`` as the submodule."""
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else base))
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def violations() -> list[str]:
    modules = project_modules()
    by_name = {layer.name: index for index, layer in enumerate(LAYERS)}
    problems = []
    for module, path in modules.items():
        here = layer_of(module)
        if here is None:
            problems.append(f"{path.relative_to(REPO)}: in no layer of tests/test_layering.py")
            continue
        for line, target in imports(path, modules):
            if target == module:
                continue
            there = layer_of(target)
            layer, theirs = LAYERS[here], LAYERS[there] if there is not None else None
            if theirs is None:
                why = "a module in no layer"
            elif there > here:
                why = f"later layer {theirs.name!r} (this is {layer.name!r})"
            elif any(target == n or target.startswith(n + ".") for n in layer.never):
                why = f"layer {layer.name!r} never imports it"
            elif theirs.imported_by is not None and here != there and \
                    here not in {by_name[n] for n in theirs.imported_by}:
                why = f"{theirs.name!r} are imported only by {', '.join(theirs.imported_by) or 'nothing'}"
            elif here == there and layer.alone:
                why = f"modules of {layer.name!r} do not import one another"
            else:
                continue
            problems.append(f"{path.relative_to(REPO)}:{line} -> {target}: {why}")
    return problems


def test_every_import_runs_one_way_along_the_pipeline():
    problems = violations()
    assert not problems, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(problems)


def test_the_rules_see_what_they_check():
    """The walker finds relative, in-function and submodule imports (else the test above would
    pass on nothing)."""
    modules = project_modules()
    assert layer_of("port.cli.convert") != layer_of("port.cli")
    assert layer_of("reproduce.datasets.voc") == layer_of("reproduce.datasets")
    found = {name for _, name in imports(REPO / "port" / "caffe" / "__init__.py", modules)}
    assert {"port.caffe.text", "port.caffe.wire"} <= found  # relative imports
    found = {name for _, name in imports(REPO / "port" / "weights.py", modules)}
    assert "port.caffe" in found  # imported inside a function
    assert len(modules) > 80 and all(layer_of(m) is not None for m in modules)


def test_the_dispatcher_names_every_command_line():
    """The port command lines are imported by the dispatcher's table (by name, at run time)."""
    from port.__main__ import COMMANDS
    commands = {m for m in project_modules() if LAYERS[layer_of(m)].name == "port command lines"}
    assert {module for module, _ in COMMANDS.values()} == commands


# -- the document names the house as it is ----------------------------------------------------
def _sections(text: str) -> list[tuple[str, str]]:
    """(the package folder a ``## `` heading names, or "", the section's text)."""
    out = []
    for section in re.split(r"\n(?=## )", text):
        head = re.match(r"## `?((?:port|reproduce)(?:/\w+)*)/?`?(?=\s|$)", section)
        out.append((head.group(1) if head else "", section))
    return out


def _names(path: Path, text: str, sections: list[tuple[str, str]]) -> bool:
    """Whether ARCHITECTURE.md names ``path``: by its path from the repository anywhere, or, in
    the section of a package above it, by its path from that package (``synth.py`` under
    ``## port/caffe``, ``datasets/voc.py`` under ``## reproduce``); a package's ``__init__.py``
    also by its folder (``datasets/``)."""
    rel = path.relative_to(REPO).as_posix()
    if re.search(rf"(?<![\w/]){re.escape(rel)}", text):
        return True
    for package, section in sections:
        if not package or not rel.startswith(package + "/"):
            continue
        inner = rel[len(package) + 1:]
        spellings = [inner]
        if path.name == "__init__.py" and "/" in inner:
            spellings.append(inner[:-len("__init__.py")])
        if any(re.search(rf"(?<![\w/]){re.escape(s)}", section) for s in spellings):
            return True
    return False


def test_architecture_names_every_module():
    """docs/ARCHITECTURE.md names every module of port/ and reproduce/ (issue 20 item 5)."""
    text = ARCHITECTURE.read_text()
    sections = _sections(text)
    missing = [p.relative_to(REPO).as_posix() for p in project_modules().values()
               if not _names(p, text, sections)]
    assert not missing, "docs/ARCHITECTURE.md does not name: " + ", ".join(missing)

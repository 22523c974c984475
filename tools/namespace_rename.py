"""Import scoring, storage and dashboard as prefsift.scoring, prefsift.storage, prefsift.dashboard.

    python tools/namespace_rename.py           # rewrite the Python files, then ruff (isort + format) them
    python tools/namespace_rename.py --check   # change nothing; list what still uses the old names (exit 1)

The three folders stay at the repository's top level; installed they are subpackages of prefsift
(pyproject.toml's package-dir), and in the source tree the links prefsift/scoring -> ../scoring (and
the two others) give them the same names. A module imported under both names would exist twice, with
two states, so nothing may import the old top-level names. This rewrites, in every Python file git
knows of (tracked, or untracked and not ignored):

- `from storage.db import x` / `from storage import x`   -> `from prefsift.storage... import x`
- `import storage`                                         -> `from prefsift import storage`
- `import storage.db as d` / `import storage as s`         -> `import prefsift.storage.db as d` / ...
- `import scoring.models` (binds `scoring`)                -> `import prefsift.scoring.models`, and the
  file's `scoring.models...` expressions -> `prefsift.scoring.models...`
- string literals that name a module: "storage.errors.StorageError", "scoring.models.load_model"
  (monkeypatch/mock targets, `python -m` arguments), f"storage.{name}" -> "prefsift.storage..."
  (the whole string must be a dotted name whose second part is a module of that package or a
  name its __init__ defines; prose and paths such as "scoring/packing.py" are left alone)

Idempotent: a converted file has nothing left to match, so a second run changes nothing; run it
again after merging work that still uses the old names. It never edits pyproject.toml or docs; the
--check mode also lists old names in import-linter contracts and `python -m` lines of shell, TOML
and Markdown files.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

OLD = ("scoring", "storage", "dashboard")
NEW_PARENT = "prefsift"
ROOT = Path(__file__).resolve().parent.parent
SELF = Path(__file__).resolve()

_NAMES = "|".join(OLD)
_STRING = re.compile(r"^(?P<prefix>[A-Za-z]*)(?P<quote>'''|\"\"\"|'|\")(?P<body>.*)(?P=quote)$", re.S)
_DOTTED = re.compile(rf"^(?P<root>{_NAMES})\.(?P<first>[A-Za-z_]\w*)(\.[A-Za-z_]\w*)*$")
_FDOTTED = re.compile(rf"^(?P<root>{_NAMES})\.(?P<first>[A-Za-z_]\w*|\{{)[^\s'\"]*$")


class Unconvertible(Exception):
    pass


def known_names(root: Path = ROOT) -> dict[str, set[str]]:
    """For each package: its submodules and subpackages, and the names its __init__ binds."""
    out: dict[str, set[str]] = {}
    for pkg in OLD:
        folder = root / pkg
        names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        names |= {p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
        init = folder / "__init__.py"
        if init.exists():
            for node in ast.parse(init.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names |= {(a.asname or a.name).split(".")[0] for a in node.names}
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(node.name)
                elif isinstance(node, ast.Assign):
                    names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.add(node.target.id)
        out[pkg] = names
    return out


def python_files(root: Path = ROOT) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.py"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    files = sorted({root / p for p in out.split("\0") if p})
    return [f for f in files if f.is_file() and not f.is_symlink() and f.resolve() != SELF]


class _Text:
    """Offsets into the source from (line, character column) or (line, UTF-8 byte column)."""

    def __init__(self, source: str):
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def at_char(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def at_byte(self, line: int, col: int) -> int:
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        return self.starts[line - 1] + len(text.encode("utf-8")[:col].decode("utf-8", "replace"))


def _string_spans(source: str, text: _Text):
    """(start, end) offsets of every string literal, f-strings whole (3.11 and 3.12+ tokens)."""
    fstart = getattr(tokenize, "FSTRING_START", None)
    fend = getattr(tokenize, "FSTRING_END", None)
    depth, begin = 0, None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if fstart is not None and tok.type == fstart:
            if depth == 0:
                begin = text.at_char(*tok.start)
            depth += 1
        elif fend is not None and tok.type == fend:
            depth -= 1
            if depth == 0:
                yield begin, text.at_char(*tok.end)
        elif tok.type == tokenize.STRING and depth == 0:
            yield text.at_char(*tok.start), text.at_char(*tok.end)


def _string_edits(source: str, text: _Text, known: dict[str, set[str]]) -> list[tuple[int, int, str]]:
    edits = []
    for start, end in _string_spans(source, text):
        m = _STRING.match(source[start:end])
        if not m or "b" in m["prefix"].lower():
            continue
        pattern = _FDOTTED if "f" in m["prefix"].lower() else _DOTTED
        d = pattern.match(m["body"])
        if d and (d["first"] == "{" or d["first"] in known[d["root"]]):
            at = start + len(m["prefix"]) + len(m["quote"])
            edits.append((at, at, NEW_PARENT + "."))
    return edits


def _bound_elsewhere(tree: ast.AST, name: str, skip: set[int]) -> bool:
    """Whether the module binds `name` other than by the `import name.x` statements in `skip`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
            if any((a.asname or a.name).split(".")[0] == name for a in node.names):
                return True
        elif isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store | ast.Del):
            return True
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        elif isinstance(node, ast.arg) and node.arg == name:
            return True
    return False


def convert(source: str, known: dict[str, set[str]], where: str = "<source>") -> str:
    tree = ast.parse(source, where)
    text = _Text(source)
    edits: list[tuple[int, int, str]] = []
    dotted_roots: dict[str, set[int]] = {}  # `import scoring.models` statements, by root name

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in OLD:
                continue
            # the module name is the first name token after `from`
            start = text.at_byte(node.lineno, node.col_offset)
            end = text.at_byte(node.end_lineno, node.end_col_offset)
            m = re.compile(r"from(\s|\\\n)+").match(source, start, end)
            if not m:
                raise Unconvertible(f"{where}:{node.lineno}: cannot find the module name")
            edits.append((m.end(), m.end(), NEW_PARENT + "."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root not in OLD:
                    continue
                a_start = text.at_byte(alias.lineno, alias.col_offset)
                if alias.asname:
                    edits.append((a_start, a_start, NEW_PARENT + "."))
                elif "." not in alias.name:
                    if len(node.names) == 1:
                        s = text.at_byte(node.lineno, node.col_offset)
                        e = text.at_byte(node.end_lineno, node.end_col_offset)
                        edits.append((s, e, f"from {NEW_PARENT} import {root}"))
                    else:
                        a_end = text.at_byte(alias.end_lineno, alias.end_col_offset)
                        edits.append((a_start, a_end, f"{NEW_PARENT}.{root} as {root}"))
                else:
                    edits.append((a_start, a_start, NEW_PARENT + "."))
                    dotted_roots.setdefault(root, set()).add(id(node))

    for root, statements in dotted_roots.items():
        # `import scoring.models` bound `scoring`; `import prefsift.scoring.models` binds `prefsift`.
        if _bound_elsewhere(tree, root, statements):
            raise Unconvertible(
                f"{where}: `import {root}.<module>` and another binding of `{root}` in one file; "
                "convert this file by hand"
            )
        attribute_bases = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == root
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == root:
                if id(node) not in attribute_bases:
                    raise Unconvertible(
                        f"{where}:{node.lineno}: `{root}` used other than as `{root}.<name>` after "
                        f"`import {root}.<module>`; convert this file by hand"
                    )
                at = text.at_byte(node.lineno, node.col_offset)
                edits.append((at, at, NEW_PARENT + "."))

    edits += _string_edits(source, text, known)
    out = source
    for start, end, new in sorted(set(edits), reverse=True):
        out = out[:start] + new + out[end:]
    if out != source:
        ast.parse(out, where)  # never write a file Python cannot read
    return out


# ---------------------------------------------------------------- --check: what is left
_DOC_LINE = re.compile(rf"^\s*(from|import)\s+({_NAMES})\b|-m\s+({_NAMES})\b")


def leftovers(root: Path = ROOT) -> list[str]:
    known = known_names(root)
    found = []
    for f in python_files(root):
        source = f.read_text(encoding="utf-8")
        try:
            if convert(source, known, str(f)) != source:
                rel = f.relative_to(root)
                for n, (a, b) in enumerate(
                    zip(source.splitlines(), convert(source, known).splitlines(), strict=False), 1
                ):
                    if a != b:
                        found.append(f"{rel}:{n}: {a.strip()}")
        except (SyntaxError, Unconvertible) as exc:
            found.append(f"{f.relative_to(root)}: {exc}")
    out = subprocess.run(
        [
            "git",
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
            "--",
            "*.md",
            "*.sh",
            "*.toml",
            ".ci/*",
        ],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in sorted(p for p in out.split("\0") if p):
        path = root / rel
        if not path.is_file():
            continue
        in_fence = False
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            in_fence ^= line.lstrip().startswith("```")
            if rel.endswith(".md") and not in_fence and "-m " not in line:
                continue
            if _DOC_LINE.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        lint = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("importlinter", {})

        def strings(x):
            if isinstance(x, str):
                yield x
            elif isinstance(x, dict):
                for v in x.values():
                    yield from strings(v)
            elif isinstance(x, list):
                for v in x:
                    yield from strings(v)

        for s in strings(lint):
            if re.match(rf"^({_NAMES})(\.|$)", s.strip()):
                found.append(f"pyproject.toml: [tool.importlinter] names {s!r}")
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; list what is left, exit 1 if any")
    args = ap.parse_args(argv)
    if args.check:
        found = leftovers()
        for line in found:
            print(line)
        print(f"{len(found)} use(s) of the old top-level names" if found else "no old top-level names left")
        return 1 if found else 0

    known = known_names()
    changed, problems = [], []
    for f in python_files():
        source = f.read_text(encoding="utf-8")
        try:
            new = convert(source, known, str(f.relative_to(ROOT)))
        except (SyntaxError, Unconvertible) as exc:
            problems.append(str(exc))
            continue
        if new != source:
            f.write_text(new, encoding="utf-8")
            changed.append(f)
    if changed:
        ruff = shutil.which("ruff")
        names = [str(f.relative_to(ROOT)) for f in changed]
        if ruff:
            # the import blocks re-sort (prefsift.storage now sorts among prefsift.*) and long
            # lines re-wrap; only the files this run changed
            subprocess.run(
                [ruff, "check", "--select", "I", "--fix", "--quiet", *names], cwd=ROOT, check=False
            )
            subprocess.run([ruff, "format", "--quiet", *names], cwd=ROOT, check=False)
        else:
            print("ruff not found: run `ruff check --select I --fix` and `ruff format` on the changed files")
    for f in changed:
        print(f"converted {f.relative_to(ROOT)}")
    for p in problems:
        print(f"NOT converted: {p}", file=sys.stderr)
    print(f"{len(changed)} file(s) converted" + (f", {len(problems)} need a hand" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

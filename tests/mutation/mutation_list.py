"""The mutation list (mutations.toml beside this file): small realistic bugs, one at a time, each with the
tests that must catch it.

Every edit is an exact text replacement that must match exactly once in the file it names, so a mutation
whose code has moved on fails the check loudly instead of silently testing nothing. Stdlib only: the check
reads the list before any environment exists.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).with_name("mutations.toml")
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_KEYS = {"name", "guarantee", "bug", "edit", "cpp", "pytest", "cpp_env", "timeout_s"}
_EDIT_KEYS = {"file", "find", "replace"}
_CPP_TEST = re.compile(r"^TEST\((\w+)\)", re.MULTILINE)


class ListError(Exception):
    """The list is malformed, or a mutation no longer applies to the tree: fix the list."""


@dataclass(frozen=True)
class Edit:
    file: str  # relative to the repository root
    find: str  # must occur exactly once
    replace: str


@dataclass(frozen=True)
class Mutation:
    name: str
    guarantee: str  # which promise of the design (section 3) or of docs/jobs.md it breaks
    bug: str  # what the planted bug does, in one sentence
    edits: tuple[Edit, ...]
    cpp: tuple[str, ...]  # C++ test name filters (tests/cpp/run.sh FILTER), run in order
    pytest: tuple[str, ...]  # pytest node ids, run in one call that stops at the first failure
    cpp_env: dict[str, str]  # environment of the C++ runs (POWERLOSS_ITERS, POWERLOSS_SEED)
    timeout_s: float  # per test run; a run that hangs counts as caught, and says so

    @property
    def touches_core(self) -> bool:
        return any(e.file.startswith("csrc/") for e in self.edits)


def load(path: Path = LIST) -> list[Mutation]:
    """Parses and checks the list's shape (not yet whether it applies: see mutated_texts)."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ListError(f"{path}: {exc}") from None
    mutations = [_mutation(entry, i) for i, entry in enumerate(doc.get("mutation", []))]
    if not mutations:
        raise ListError(f"{path}: no [[mutation]] entries")
    seen: set[str] = set()
    for m in mutations:
        if m.name in seen:
            raise ListError(f"mutation {m.name!r} is listed twice")
        seen.add(m.name)
    return mutations


def _mutation(entry: dict, index: int) -> Mutation:
    where = f"mutation #{index + 1} ({entry.get('name', '?')})"
    unknown = set(entry) - _KEYS
    if unknown:
        raise ListError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("name", "guarantee", "bug"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ListError(f"{where}: `{key}` must be a non-empty string")
    if not _NAME.match(entry["name"]):
        raise ListError(f"{where}: names are lower-case words joined by '-'")
    edits = []
    for e in entry.get("edit", []):
        if set(e) != _EDIT_KEYS or not all(isinstance(e[k], str) for k in _EDIT_KEYS):
            raise ListError(f"{where}: each [[mutation.edit]] has exactly the strings file, find, replace")
        if not e["find"] or e["find"] == e["replace"]:
            raise ListError(f"{where}: an edit of {e['file']} finds nothing or changes nothing")
        edits.append(Edit(e["file"], e["find"], e["replace"]))
    if not edits:
        raise ListError(f"{where}: no [[mutation.edit]]")
    cpp, tests = entry.get("cpp", []), entry.get("pytest", [])
    if not all(isinstance(t, str) and t for t in [*cpp, *tests]) or not (cpp or tests):
        raise ListError(f"{where}: name at least one test (`cpp` filters and/or `pytest` node ids)")
    if cpp and not any(e.file.startswith("csrc/") for e in edits):
        raise ListError(f"{where}: C++ tests see only csrc/; this mutation edits none of it")
    env = entry.get("cpp_env", {})
    if not all(isinstance(v, str) for v in env.values()):
        raise ListError(f"{where}: cpp_env values are strings")
    return Mutation(entry["name"], entry["guarantee"].strip(), " ".join(entry["bug"].split()), tuple(edits),
                    tuple(cpp), tuple(tests), dict(env), float(entry.get("timeout_s", 300)))


def mutated_texts(root: Path, m: Mutation) -> dict[str, str]:
    """The new text of each file m changes, its edits applied in order to the tree at `root`; ListError when
    an edit does not match exactly once (the code moved on: update the mutation or drop it)."""
    texts: dict[str, str] = {}
    for e in m.edits:
        if e.file not in texts:
            try:
                texts[e.file] = (root / e.file).read_text()
            except OSError as exc:
                raise ListError(f"{m.name}: cannot read {e.file}: {exc.strerror}") from None
        count = texts[e.file].count(e.find)
        if count != 1:
            raise ListError(f"{m.name}: its edit of {e.file} matches {count} times, not once; the code moved on: "
                            f"update the mutation (or drop it, saying why)")
        texts[e.file] = texts[e.file].replace(e.find, e.replace, 1)
    return texts


def missing_tests(root: Path, m: Mutation) -> list[str]:
    """The tests m names that do not exist in the tree at `root` (a renamed test would silently catch nothing)."""
    missing = []
    cpp_names = {n for f in sorted((root / "tests" / "cpp").glob("*.cc")) for n in _CPP_TEST.findall(f.read_text())}
    missing += [f"C++ filter {f!r} matches no test" for f in m.cpp if not any(f in n for n in cpp_names)]
    for node in m.pytest:
        file, _, rest = node.partition("::")
        func = rest.split("::")[-1].split("[")[0]
        path = root / file
        if not rest or not path.is_file() or not re.search(rf"^\s*(async\s+)?def {re.escape(func)}\(",
                                                          path.read_text(), re.MULTILINE):
            missing.append(f"pytest {node!r} does not exist")
    return missing

"""Every marked copy between model folders is still identical to its source (DESIGN.md: a model folder imports only
its own files, so code two zoo models share is copied and marked, as transformers does).

A marker is a comment line right above a top-level `def`/`class` (or a method):
    # Copied from medvlp_hf.models.medvill.image_processing_medvill.decode_array
    # Copied from medvlp_hf.models.medvill.modeling_medvill.MedViLLLinear with MedViLL->MISS
The copy must equal the source's code after the optional `old->new` replacements (comma-separated).
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medvlp_hf"
MARKER = re.compile(r"^(\s*)# Copied from (medvlp_hf\.[\w.]+)(?: with (.+))?$")


def object_source(path: Path, qualified_name: str) -> str:
    """The source text of `qualified_name` (e.g. `Class` or `Class.method`) defined in the file at `path`."""
    text = path.read_text(encoding="utf-8")
    nodes = ast.parse(text).body
    node = None
    for part in qualified_name.split("."):
        node = next((n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            raise LookupError(f"{qualified_name} is not defined in {path}")
        nodes = node.body
    lines = text.splitlines()
    start = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list]) - 1
    return "\n".join(lines[start : node.end_lineno])


def resolve(reference: str) -> tuple[Path, str]:
    """`medvlp_hf.models.a.file.Name[.method]` -> (path of `file.py`, `Name[.method]`)."""
    parts = reference.split(".")
    for split in range(len(parts) - 1, 1, -1):
        path = PACKAGE.parent.joinpath(*parts[:split]).with_suffix(".py")
        if path.is_file():
            return path, ".".join(parts[split:])
    raise LookupError(f"no module file for {reference}")


def apply_replacements(code: str, replacements: str | None) -> str:
    for pair in (replacements or "").split(","):
        if pair.strip():
            old, new = (side.strip() for side in pair.split("->"))
            code = code.replace(old, new)
    return code


def dedent_to(code: str, indent: str) -> str:
    """Re-indent a source block (its first line at column 0 of the source's own nesting) to `indent`."""
    lines = code.splitlines()
    base = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(indent + line[base:] if line.strip() else "" for line in lines)


def check_copies(path: Path) -> list[str]:
    """Problems with the marked copies in the file at `path` (empty when every copy matches its source)."""
    problems = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        match = MARKER.match(line)
        if not match:
            continue
        indent, reference, replacements = match.groups()
        copy_node = _node_after(path, number)
        if copy_node is None:
            problems.append(f"{path.name}:{number}: marker not followed by a def or class")
            continue
        source_path, name = resolve(reference)
        expected = dedent_to(apply_replacements(object_source(source_path, name), replacements), indent)
        actual = "\n".join(lines[number : copy_node.end_lineno])
        if actual != expected:
            problems.append(f"{path.name}:{number}: copy of {reference} differs from its source")
    return problems


def _node_after(path: Path, marker_line: int):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
            if first == marker_line + 1:
                return node
    return None


def model_files():
    return sorted((PACKAGE / "models").glob("*/*.py"))


@pytest.mark.parametrize("path", model_files(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_marked_copies_match_their_source(path):
    assert check_copies(path) == []


def test_the_check_finds_an_edited_copy(tmp_path, monkeypatch):
    """The checker itself: an exact copy passes, a copy with a replacement passes, an edited copy is reported."""
    package = tmp_path / "medvlp_hf" / "models"
    (package / "a").mkdir(parents=True)
    (package / "b").mkdir(parents=True)
    (package / "a" / "modeling_a.py").write_text(
        "class AThing:\n    def size(self):\n        return 'A' * 2\n\n\ndef helper(x):\n    return x + 1\n"
    )
    copies = package / "b" / "modeling_b.py"
    copies.write_text(
        "# Copied from medvlp_hf.models.a.modeling_a.AThing with A->B\nclass BThing:\n    def size(self):\n"
        "        return 'B' * 2\n\n\n# Copied from medvlp_hf.models.a.modeling_a.helper\ndef helper(x):\n"
        "    return x + 1\n"
    )
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "medvlp_hf")
    assert check_copies(copies) == []
    copies.write_text(copies.read_text().replace("return x + 1", "return x + 2"))
    assert check_copies(copies) == ["modeling_b.py:7: copy of medvlp_hf.models.a.modeling_a.helper differs from its source"]


def test_model_folders_import_only_their_own_files():
    """Remote code ships a folder's own .py files: any import of the package outside the folder breaks it."""
    for path in model_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("medvlp_hf"):
                raise AssertionError(f"{path}: imports {node.module}")
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                raise AssertionError(f"{path}: relative import beyond its folder ({'.' * node.level}{node.module})")
            if isinstance(node, ast.Import) and any(alias.name.startswith("medvlp_hf") for alias in node.names):
                raise AssertionError(f"{path}: imports medvlp_hf")

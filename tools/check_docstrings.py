"""List public functions/classes under microvae/ whose docstrings lack numpydoc sections.

Public = listed in the module's ``__all__`` (or, without ``__all__``, every top-level def/class
without a leading underscore defined in the module), plus the public methods of such classes.
A function needs ``Parameters`` if it takes parameters besides self/cls, and ``Returns``/``Yields``
if it returns something other than None (annotation, else a ``return value``/``yield`` in its body).
A class needs ``Parameters`` or ``Attributes`` if its ``__init__`` (or dataclass/NamedTuple fields)
takes parameters. Properties and dunder methods other than ``__init__`` are skipped.
Usage: python3 check_docstrings.py [root=microvae] [-v]
"""

import ast
import re
import sys
from pathlib import Path

SECTION = r"^\s*{}\s*\n\s*-{{3,}}\s*$"


def has(doc, *names):
    return any(re.search(SECTION.format(n), doc or "", re.M) for n in names)


def params_of(fn):
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    if a.kwarg:
        names.append("**" + a.kwarg.arg)
    return [n for n in names if n not in ("self", "cls")]


def returns_value(fn):
    r = fn.returns
    if r is not None:
        txt = ast.unparse(r)
        return txt not in ("None", "NoReturn", "'None'")
    for node in ast.walk(fn):
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                return True
    return False


def is_property(fn):
    for d in fn.decorator_list:
        t = ast.unparse(d)
        if t in ("property", "cached_property", "functools.cached_property") or t.endswith((".setter", ".getter")):
            return True
    return False


def check_fn(fn, qual, out):
    doc = ast.get_docstring(fn)
    miss = []
    if params_of(fn) and not has(doc, "Parameters", "Other Parameters"):
        miss.append("Parameters")
    if returns_value(fn) and not has(doc, "Returns", "Yields"):
        miss.append("Returns")
    if not doc:
        miss.append("docstring")
    if miss:
        out.append((qual, fn.lineno, miss))


def is_dataclass_like(cls):
    for d in cls.decorator_list:
        if "dataclass" in ast.unparse(d):
            return True
    return any(ast.unparse(b) in ("NamedTuple", "typing.NamedTuple", "TypedDict") for b in cls.bases)


def check_class(cls, qual, out):
    doc = ast.get_docstring(cls)
    init = next(
        (n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "__init__"),
        None,
    )
    needs = False
    if init is not None:
        needs = bool(params_of(init))
        idoc = ast.get_docstring(init)
        if has(idoc, "Parameters"):
            needs = False
    elif is_dataclass_like(cls):
        needs = any(isinstance(n, ast.AnnAssign) for n in cls.body)
    miss = []
    if needs and not has(doc, "Parameters", "Attributes"):
        miss.append("Parameters/Attributes")
    if not doc:
        miss.append("docstring")
    if miss:
        out.append((qual, cls.lineno, miss))
    for n in cls.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if n.name.startswith("_") or is_property(n):
                continue
            check_fn(n, f"{qual}.{n.name}", out)


def public_names(tree):
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                try:
                    return set(ast.literal_eval(node.value))
                except ValueError:
                    pass
    return None


def check_source(source, modname):
    """Gaps in one module's source text: a list of ``(qualified name, line, [missing sections])``."""
    tree = ast.parse(source)
    names = public_names(tree)
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if names is not None:
            if node.name not in names:
                continue
        elif node.name.startswith("_"):
            continue
        qual = f"{modname}.{node.name}"
        if isinstance(node, ast.ClassDef):
            check_class(node, qual, out)
        else:
            check_fn(node, qual, out)
    return out


def check_module(path, modname):
    return check_source(Path(path).read_text(), modname)


def module_name(path, root):
    """Dotted module name of ``path``, counted from the folder above ``root`` (``microvae/a/b.py`` -> ``microvae.a.b``)."""
    parts = Path(path).relative_to(Path(root).parent).with_suffix("").parts
    mod = ".".join(parts)
    return mod[: -len(".__init__")] if mod.endswith(".__init__") else mod


def scan(root):
    """``{module: (path, gaps)}`` for every ``*.py`` under ``root``, in path order."""
    root = Path(root)
    return {module_name(path, root): (path, check_module(path, module_name(path, root))) for path in sorted(root.rglob("*.py"))}


def format_gaps(per_module):
    """One line per gap: ``path:line: qualified name: missing ...``."""
    return [f"{path}:{line}: {qual}: missing {', '.join(miss)}" for path, items in per_module.values() for qual, line, miss in items]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    root = Path(args[0] if args else "microvae")
    verbose = "-v" in sys.argv
    per_module = scan(root)
    total = 0
    for mod, (path, items) in per_module.items():
        if not items:
            continue
        total += len(items)
        print(f"{mod}: {len(items)}")
        if verbose:
            for qual, line, miss in items:
                print(f"    {qual} ({path}:{line}): missing {', '.join(miss)}")
    done = [m for m, (_, items) in per_module.items() if not items]
    print(f"modules complete: {len(done)}/{len(per_module)}")
    print(f"public functions/classes lacking sections: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

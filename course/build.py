"""Write the student version of every course assignment: solutions replaced by stubs, hidden tests removed.

    python course/build.py OUT [--overwrite]      writes OUT/<id>/ for each id of `grade.py --list`

A student receives OUT/<id>/, edits it, and hands the folder back to be graded with `grade.py <id> FOLDER`. Every
.py file and every notebook code cell goes through markers.student_text (nbgrader's markers); notebooks lose their
outputs; other files are copied. The build refuses to write a file in which a line of a solution or of a hidden
test survives (see leaked_lines).
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

from markers import (BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, MARKERS, marked_lines, student_text,
                     without_hidden_tests, without_solutions)

COURSE = Path(__file__).resolve().parent
SKIPPED = ("__pycache__", ".ipynb_checkpoints", ".hypothesis")


def assignment_dirs():
    return sorted(path for path in COURSE.iterdir() if (path / "tests.py").is_file())


def cell_text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def code_text(path):
    """The text the markers apply to: a .py file's, or a notebook's code cells one after another."""
    if path.suffix == ".ipynb":
        return "\n".join(cell_text(cell) for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code")
    return path.read_text()


def student_notebook(path):
    """The notebook's JSON with each code cell's solutions stubbed and hidden tests removed, outputs cleared."""
    notebook = json.loads(path.read_text())
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            cell["source"] = student_text(cell_text(cell), f"{path} cell {number + 1}").splitlines(keepends=True)
            cell["outputs"], cell["execution_count"] = [], None
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def secret_lines(text, where):
    """Stripped lines of the solutions and hidden tests that appear nowhere else in the instructor's file: what must
    not reach a student. (A line such as `return x` that the file also has outside every block is no secret.)"""
    inside = marked_lines(text, BEGIN_SOLUTION, END_SOLUTION, where) + marked_lines(text, BEGIN_HIDDEN, END_HIDDEN,
                                                                                    where)
    outside = {line.strip() for line in without_hidden_tests(without_solutions(text, where), where).splitlines()}
    return {line.strip() for line in inside if line.strip()} - outside


def leaked_lines(instructor_text, student_version, where):
    """Lines of the student version that are a solution's or a hidden test's, or a marker: [] when nothing leaked."""
    secrets = secret_lines(instructor_text, where) | set(MARKERS)
    return [line for line in student_version.splitlines() if line.strip() in secrets]


def build_file(source, target):
    """Write the student version of one file; ValueError when a secret line would be in it."""
    if source.suffix not in (".py", ".ipynb"):
        shutil.copyfile(source, target)
        return
    if source.suffix == ".py":
        text = student_code = student_text(source.read_text(), str(source))
    else:
        text = student_notebook(source)
        student_code = "\n".join(cell_text(cell) for cell in json.loads(text)["cells"] if cell["cell_type"] == "code")
    leaks = leaked_lines(code_text(source), student_code, str(source))
    if leaks:
        raise ValueError(f"{source}: the student version would keep {leaks[0]!r}")
    target.write_text(text)


def build_assignment(source, target):
    target.mkdir(parents=True)
    for path in sorted(source.rglob("*")):
        if any(part in SKIPPED for part in path.relative_to(source).parts):
            continue
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(exist_ok=True)
        else:
            build_file(path, destination)


def build(out, overwrite=False):
    """OUT/<id>/ for every assignment; the ids written."""
    out = Path(out)
    written = []
    for source in assignment_dirs():
        target = out / source.name
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} exists: pass --overwrite to replace it")
            shutil.rmtree(target)
        build_assignment(source, target)
        written.append(source.name)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to write the student versions into")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT/<id>/ folders that exist")
    args = parser.parse_args(argv)
    try:
        for assignment in build(args.out, args.overwrite):
            print(f"{Path(args.out) / assignment}/")
    except (FileExistsError, ValueError) as error:
        print(f"build.py: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

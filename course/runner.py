"""The grader's child process: runs one assignment's tests on a submission, part by part, and reports each part as a
JSON line. grade.py starts it, watches the time each part takes, and starts a new one after a crash or a timeout.

    python course/runner.py ASSIGNMENT_DIR SUBMISSION_DIR FIRST_PART [--public]

Messages (one JSON object a line, on the file descriptor stdout had at start; the student's prints go to stderr):
    {"loaded": true}                                             once, after loading torch and the tests
    {"imported": true} or {"imported": false, "error": "..."}    once, after loading the submission
    {"start": i}                                                 before part i
    {"part": i, "results": [{"test", "hidden", "passed", "message"}]}      after it
"""
import ast
import importlib.util
import json
import os
import sys
import traceback
import types
from pathlib import Path

COURSE = Path(__file__).resolve().parent
sys.path[:0] = [str(COURSE.parent), str(COURSE)]  # siglip_min, parity (the oracles) and grading.py

from markers import without_hidden_tests  # noqa: E402


def load_tests(assignment, public):
    """The instructor's tests.py as a module; without its hidden tests when public."""
    path = assignment / "tests.py"
    source = path.read_text()
    if public:
        source = without_hidden_tests(source, str(path))
    module = types.ModuleType(f"tests_{assignment.name}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def public_names(assignment):
    """Names of the tests a student has: those left when the hidden ones are removed."""
    path = assignment / "tests.py"
    tree = ast.parse(without_hidden_tests(path.read_text(), str(path)))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def part_of(test_name, parts):
    """The part a test belongs to: the longest part name p with the test named test_<p> or test_<p>_<what>."""
    owners = [part for part, _ in parts if test_name == f"test_{part}" or test_name.startswith(f"test_{part}_")]
    return max(owners, key=len) if owners else None


def part_tests(tests, part):
    """The test functions of `part`, in the order tests.py defines them."""
    return [f for name, f in vars(tests).items() if callable(f) and part_of(name, tests.PARTS) == part]


def where_in(error, filename):
    """' (attention.py line 12, in split_heads)' for the deepest frame of the error inside the student's file."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename).name == filename]
    return f" ({filename} line {frames[-1].lineno}, in {frames[-1].name})" if frames else ""


def outcome(test, student, reference, filename):
    """(passed, message) of one test."""
    try:
        test(student, reference)
    except NotImplementedError as error:
        return False, f"not written yet: NotImplementedError{where_in(error, filename)}"
    except AssertionError as error:
        return False, str(error) or f"assertion failed{where_in(error, filename)}"
    except (Exception, SystemExit) as error:  # the student's code raised: that costs this test, not the grader
        return False, f"{type(error).__name__}: {error}{where_in(error, filename)}"
    return True, ""


def main(argv):
    assignment, submission, first = Path(argv[0]), Path(argv[1]), int(argv[2])
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # print() in student code (and in C code) lands on stderr, not in the report

    def send(message):
        report.write(json.dumps(message) + "\n")
        report.flush()

    tests = load_tests(assignment, public="--public" in argv)
    send({"loaded": True})
    sys.path.append(str(submission))  # after the oracles: a student's file never shadows siglip_min
    filename = tests.MODULE
    try:
        student = load_module(submission / filename, f"student_{Path(filename).stem}")
    except BaseException as error:  # SyntaxError, ImportError, SystemExit: every part fails with this message
        send({"imported": False, "error": f"could not import {filename}: {type(error).__name__}: {error}"
                                          f"{where_in(error, filename)}"})
        return
    reference = load_module(assignment / filename, f"reference_{Path(filename).stem}")
    public = public_names(assignment)
    send({"imported": True})
    for index, (part, _points) in enumerate(tests.PARTS):
        if index < first:
            continue
        send({"start": index})
        results = []
        for test in part_tests(tests, part):
            passed, message = outcome(test, student, reference, filename)
            results.append({"test": test.__name__, "hidden": test.__name__ not in public, "passed": passed,
                            "message": message})
        send({"part": index, "results": results})


if __name__ == "__main__":
    main(sys.argv[1:])

"""Grade a submission of one course assignment, part by part.

    python course/grade.py --list                          the assignment ids, one a line
    python course/grade.py ID FOLDER [--json] [--public]   grade FOLDER (a student's copy of OUT/ID, or course/ID)

Exit status 0 whenever the submission could be graded (whatever the score), 2 when it cannot be read (no such
folder, no such assignment, the module to grade missing). `--public` runs only the tests a student has; without it
the hidden ones (other seeds and configs) count too. The student's code runs in a child process (runner.py) with a
time limit per part: a crash, an endless loop or an import error costs the points of the part it hits, never the
grade of the others.
"""
import argparse
import ast
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

COURSE = Path(__file__).resolve().parent
RUNNER = COURSE / "runner.py"
TIME_LIMIT = 60.0  # seconds a part may take; every part of every assignment takes under 10 s on 2 cores
LOAD_LIMIT = 300.0  # seconds to import torch and the tests, before any student code runs (a cold disk is slow)


class Unreadable(Exception):
    """The submission cannot be graded at all (exit status 2)."""


def assignment_ids():
    return sorted(path.name for path in COURSE.iterdir() if (path / "tests.py").is_file())


def assignment_facts(assignment):
    """(MODULE, PARTS) of an assignment's tests.py, read without running it: the file graded, [(part, points)]."""
    tree = ast.parse((assignment / "tests.py").read_text())
    facts = {target.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
             for target in node.targets if isinstance(target, ast.Name) and target.id in ("MODULE", "PARTS")}
    return facts["MODULE"], facts["PARTS"]


def check_submission(folder, module):
    if not folder.is_dir():
        raise Unreadable(f"{folder}: no such folder")
    path = folder / module
    if not path.is_file():
        raise Unreadable(f"{folder}: no {module} in it (the file this assignment grades)")
    try:
        path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise Unreadable(f"{path}: cannot be read as text ({error})") from None


def read_lines(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


def next_message(lines, time_limit):
    """The child's next JSON message, 'eof' when it exited, or 'timeout'."""
    try:
        line = lines.get(timeout=time_limit)
    except queue.Empty:
        return "timeout"
    return "eof" if line is None else json.loads(line)


def failed(message):
    return [{"test": "-", "hidden": False, "passed": False, "message": message}]


def tail(path, characters=600):
    text = Path(path).read_text(errors="replace").strip()
    return text[-characters:] if text else "(nothing on stderr)"


def child_environment(scratch):
    """Ours, but grading leaves nothing in the graded folder: no __pycache__, hypothesis's files in scratch."""
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HYPOTHESIS_STORAGE_DIRECTORY": scratch}


def run_parts(assignment, submission, parts, public, time_limit):
    """{part index: test results}, starting a child at the first part not yet reported, until every part is."""
    results, first = {}, 0
    while first < len(parts):
        with tempfile.NamedTemporaryFile("w+", suffix=".stderr") as stderr, tempfile.TemporaryDirectory() as scratch:
            command = [sys.executable, str(RUNNER), str(assignment), str(submission), str(first)]
            child = subprocess.Popen(command + (["--public"] if public else []), stdout=subprocess.PIPE,
                                     stderr=stderr, text=True, cwd=submission, env=child_environment(scratch))
            lines = queue.Queue()
            threading.Thread(target=read_lines, args=(child.stdout, lines), daemon=True).start()
            first = follow_child(lines, parts, first, results, time_limit, stderr.name)
            child.kill()
            child.wait()
    return results


def follow_child(lines, parts, first, results, time_limit, stderr):
    """Record the child's reports in results; the index of the first part it left unreported (len(parts) if none)."""
    limit = LOAD_LIMIT
    message = next_message(lines, limit)  # {"loaded": true}: torch and the tests are in, no student code has run
    if isinstance(message, dict):
        limit = time_limit
        message = next_message(lines, limit)  # {"imported": ...}: the student's module, under the time limit
    if message == "timeout" or message == "eof" or not message["imported"]:
        why = {"timeout": f"loading the submission did not finish within {limit:g} s",
               "eof": f"the grader's child process died while loading the submission: {tail(stderr)}"}
        for index in range(first, len(parts)):
            results[index] = failed(why.get(message) if isinstance(message, str) else message["error"])
        return len(parts)
    current = first
    while current < len(parts):
        message = next_message(lines, time_limit)
        if isinstance(message, dict) and "start" in message:
            current = message["start"]
            continue
        if isinstance(message, dict):
            results[message["part"]] = message["results"]
            current = message["part"] + 1
            continue
        results[current] = failed(f"timed out after {time_limit:g} s (an endless loop?)" if message == "timeout"
                                  else f"crashed the Python process: {tail(stderr)}")
        return current + 1
    return current


def part_report(part, points, results):
    passed = [result for result in results if result["passed"]]
    if not results:
        raise RuntimeError(f"part {part!r} has no tests")
    wrong = [result for result in results if not result["passed"]]
    feedback = f"all {len(results)} tests pass" if not wrong else "; ".join(
        f"{result['test']}{' (hidden)' if result['hidden'] else ''}: {result['message']}" for result in wrong[:3])
    if len(wrong) > 3:
        feedback += f"; and {len(wrong) - 3} more failing"
    return {"name": part, "score": round(points * len(passed) / len(results), 2), "max_score": points,
            "feedback": feedback}


def grade(assignment_id, folder, public=False, time_limit=TIME_LIMIT):
    """{"assignment", "score", "max_score", "parts": [{"name", "score", "max_score", "feedback"}]}."""
    if assignment_id not in assignment_ids():
        raise Unreadable(f"no assignment {assignment_id!r}; there are {', '.join(assignment_ids())}")
    assignment = COURSE / assignment_id
    module, parts = assignment_facts(assignment)
    folder = Path(folder).resolve()
    check_submission(folder, module)
    results = run_parts(assignment, folder, parts, public, time_limit)
    reports = [part_report(part, points, results[index]) for index, (part, points) in enumerate(parts)]
    return {"assignment": assignment_id, "score": round(sum(r["score"] for r in reports), 2),
            "max_score": sum(r["max_score"] for r in reports), "parts": reports}


def readable(report):
    width = max(len(part["name"]) for part in report["parts"])
    lines = [f"{report['assignment']}: {report['score']:g} / {report['max_score']:g} points"]
    lines += [f"  {part['name'].ljust(width)}  {part['score']:g}/{part['max_score']:g}  {part['feedback']}"
              for part in report["parts"]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the assignment ids, one a line")
    parser.add_argument("assignment", nargs="?", help="an id from --list")
    parser.add_argument("folder", nargs="?", help="the submission: a student's folder, or course/ID itself")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the readable report")
    parser.add_argument("--public", action="store_true", help="only the tests a student has (no hidden ones)")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="seconds per part (default 60)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(assignment_ids()))
        return 0
    if not args.assignment or not args.folder:
        parser.error("give an assignment id and a folder, or --list")
    try:
        report = grade(args.assignment, args.folder, args.public, args.time_limit)
    except Unreadable as error:
        print(f"grade.py: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else readable(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

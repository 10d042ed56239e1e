"""The instructor-source markers, nbgrader's: what build.py removes and what the grader's public mode leaves out.

    ### BEGIN SOLUTION ... ### END SOLUTION          replaced by a stub: `# YOUR CODE HERE` + `raise NotImplementedError()`
    ### BEGIN HIDDEN TESTS ... ### END HIDDEN TESTS  removed (the tests only the grader runs)

The same lines nbgrader's `ClearSolutions` and `RemoveHidden` preprocessors look for, in .py files and in the code cells
of notebooks, so an nbgrader user reads our sources as theirs. Comments above a solution block stay: they are the hint.
"""
import re

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)


class MarkerError(ValueError):
    """A begin marker without its end, or an end without its begin; names the file and line."""


def blocks(lines, begin, end, where):
    """[(first, last)] line indices of each begin ... end block, markers included."""
    found, start = [], None
    for number, line in enumerate(lines):
        marker = line.strip()
        if marker == begin:
            if start is not None:
                raise MarkerError(f"{where}:{number + 1}: {begin} inside the block opened at line {start + 1}")
            start = number
        elif marker == end:
            if start is None:
                raise MarkerError(f"{where}:{number + 1}: {end} without {begin}")
            found.append((start, number))
            start = None
    if start is not None:
        raise MarkerError(f"{where}:{start + 1}: {begin} is never closed by {end}")
    return found


def replace_blocks(text, begin, end, stub, where):
    """text with every begin ... end block replaced by stub(indent) lines (indent: the begin marker's)."""
    lines = text.splitlines(keepends=True)
    out, previous = [], 0
    for first, last in blocks(lines, begin, end, where):
        out += lines[previous:first]
        indent = re.match(r"\s*", lines[first]).group()
        out += stub(indent)
        previous = last + 1
    return "".join(out + lines[previous:])


def solution_stub(indent):
    return [f"{indent}# YOUR CODE HERE\n", f"{indent}raise NotImplementedError()\n"]


def without_solutions(text, where):
    return replace_blocks(text, BEGIN_SOLUTION, END_SOLUTION, solution_stub, where)


def without_hidden_tests(text, where):
    return replace_blocks(text, BEGIN_HIDDEN, END_HIDDEN, lambda indent: [], where)


def student_text(text, where):
    """What a student receives of an instructor source: solutions stubbed, hidden tests gone."""
    return without_hidden_tests(without_solutions(text, where), where)


def marked_lines(text, begin, end, where):
    """The lines strictly inside each begin ... end block."""
    lines = text.splitlines()
    return [line for first, last in blocks(lines, begin, end, where) for line in lines[first + 1:last]]

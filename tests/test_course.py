"""The course (course/): build.py's student versions and grade.py's grades, run as an instructor runs them.

Every assignment's instructor version scores full marks and its untouched student version scores 0 without
breaking the grader; each seeded bug (one line changed in an instructor's solution) loses points in exactly the part
it breaks, with feedback that names the mistake; a crash, an endless loop or an import error costs only what it hits;
and no line of a solution or of a hidden test reaches a student's file.

All gradings run once, two at a time (each is a child process), in a module fixture; the tests read the reports.
"""
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"
IDS = ["01_inputs", "02_attention", "03_towers", "04_loss", "05_numpy_port"]
MODULES = {"01_inputs": "inputs.py", "02_attention": "attention.py", "03_towers": "towers.py", "04_loss": "loss.py",
           "05_numpy_port": "numpy_siglip.py"}

# name: (assignment, old text, new text, the part that must lose points, words its feedback must hold)
BUGS = {
    "softmax over the wrong axis": ("02_attention", "return scores.softmax(dim=-1)", "return scores.softmax(dim=-2)",
                                    "attention_weights", "wrong axis"),
    "no 1/sqrt(head_dim)": ("02_attention", "scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])",
                            "scores = q @ k.transpose(-1, -2)", "attention_weights", "sqrt(head_dim)"),
    "exact instead of tanh GELU": ("02_attention",
                                   "return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))",
                                   "return torch.nn.functional.gelu(x)", "mlp", "exact (erf) GELU"),
    "LayerNorm eps 1e-5": ("02_attention", "nn.LayerNorm(dim, eps=eps)", "nn.LayerNorm(dim)", "encoder_layer",
                           "eps 1e-5"),
    "patches flattened column-major": ("05_numpy_port", "grid.transpose(0, 2, 4, 1, 3, 5)",
                                       "grid.transpose(0, 4, 2, 1, 3, 5)", "patch_embeddings",
                                       "first wrong layer vision.patch_embeds"),
    "pooling the first text token": ("03_towers", "self.head(x[:, -1])", "self.head(x[:, 0])", "text_tower",
                                     "you pooled the first token"),
    "logit_bias left out of the loss": ("04_loss",
                                        "logits = pair_logits(image_embeds, text_embeds, logit_scale, logit_bias)",
                                        "logits = pair_logits(image_embeds, text_embeds, logit_scale, 0.0)",
                                        "sigmoid_loss", "logit_bias is left out of the loss"),
    "chunked loss double-counts the positive block": ("04_loss", "for step in range(1, num_chunks):",
                                                      "for step in range(num_chunks):", "chunked",
                                                      "counted more than once"),
    "padding on the left": ("01_inputs", "ids[row, : len(sequence)] = sequence\n        mask[row, : len(sequence)] = 1",
                            "ids[row, max_length - len(sequence):] = sequence\n        mask[row, max_length - len(sequence):] = 1",
                            "token_ids", "padded on the left"),
}


def grade(assignment, folder, *options):
    """(exit status, the JSON report or None, stderr) of `grade.py assignment folder --json`."""
    done = subprocess.run([sys.executable, str(COURSE / "grade.py"), assignment, str(folder), "--json", *options],
                          capture_output=True, text=True, timeout=600)
    return done.returncode, json.loads(done.stdout) if done.returncode == 0 else None, done.stderr


def with_change(folder, module, old, new):
    """folder with `old` replaced by `new` in its module; `old` must be there."""
    path = folder / module
    text = path.read_text()
    assert old in text, f"{path}: the seeded bug's text {old!r} is not in the file"
    path.write_text(text.replace(old, new))
    return folder


def copy_of(assignment, destination):
    return Path(shutil.copytree(COURSE / assignment, destination, ignore=shutil.ignore_patterns("__pycache__")))


@pytest.fixture(scope="module")
def handout(tmp_path_factory):
    out = tmp_path_factory.mktemp("handout")
    done = subprocess.run([sys.executable, str(COURSE / "build.py"), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def reports(handout, tmp_path_factory):
    """{key: (status, report, stderr)} for the instructor and student version of every assignment and every bug."""
    jobs = {("instructor", a): (a, COURSE / a) for a in IDS}
    jobs.update({("student", a): (a, handout / a) for a in IDS})
    for name, (assignment, old, new, _, _) in BUGS.items():
        folder = copy_of(assignment, tmp_path_factory.mktemp("bug") / assignment)
        jobs[("bug", name)] = (assignment, with_change(folder, MODULES[assignment], old, new))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(grade, *job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def parts_of(report):
    return {part["name"]: part for part in report["parts"]}


def test_list_prints_the_five_assignments_in_order():
    done = subprocess.run([sys.executable, str(COURSE / "grade.py"), "--list"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == IDS


@pytest.mark.parametrize("assignment", IDS)
def test_instructor_version_scores_full_marks(reports, assignment):
    status, report, stderr = reports[("instructor", assignment)]
    assert status == 0, stderr
    assert report["assignment"] == assignment and report["max_score"] > 0
    assert set(report) == {"assignment", "score", "max_score", "parts"}
    for part in report["parts"]:
        assert set(part) == {"name", "score", "max_score", "feedback"}
        assert part["score"] == part["max_score"], part
    assert report["score"] == report["max_score"] == sum(part["max_score"] for part in report["parts"])


@pytest.mark.parametrize("assignment", IDS)
def test_untouched_student_version_scores_zero(reports, assignment):
    status, report, stderr = reports[("student", assignment)]
    assert status == 0, stderr
    assert report["score"] == 0, report
    for part in report["parts"]:
        assert "not written yet" in part["feedback"], part


@pytest.mark.parametrize("name", BUGS)
def test_seeded_bug_loses_exactly_its_part(reports, name):
    assignment, _, _, broken, words = BUGS[name]
    status, report, stderr = reports[("bug", name)]
    assert status == 0, stderr
    parts = parts_of(report)
    assert parts[broken]["score"] < parts[broken]["max_score"], parts[broken]
    assert words in parts[broken]["feedback"], parts[broken]["feedback"]
    others = [part for part in report["parts"] if part["name"] != broken and part["score"] != part["max_score"]]
    assert not others, others


def solution_and_hidden_lines(text):
    """Stripped lines inside the solution and hidden-test blocks, less those the file also has outside them."""
    inside, outside, block = set(), set(), None
    for line in text.splitlines():
        marker = line.strip()
        if marker in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
            block = marker
        elif marker in ("### END SOLUTION", "### END HIDDEN TESTS"):
            block = None
        elif marker:
            (inside if block else outside).add(marker)
    return inside - outside


def code_of(path):
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return path.read_text()


@pytest.mark.parametrize("assignment", IDS)
def test_no_line_of_a_solution_or_hidden_test_reaches_a_student(handout, assignment):
    sources = [p for p in (COURSE / assignment).rglob("*") if p.suffix in (".py", ".ipynb") and "__pycache__" not in p.parts]
    assert any("### BEGIN SOLUTION" in code_of(p) for p in sources)
    assert "### BEGIN HIDDEN TESTS" in (COURSE / assignment / "tests.py").read_text()
    for source in sources:
        student = handout / assignment / source.relative_to(COURSE / assignment)
        assert student.is_file(), f"{student} missing from the handout"
        secrets = solution_and_hidden_lines(code_of(source)) | {"### BEGIN SOLUTION", "### END SOLUTION",
                                                                 "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"}
        leaked = [line for line in code_of(student).splitlines() if line.strip() in secrets]
        assert not leaked, f"{student}: {leaked[:3]}"
    notebooks = list((handout / assignment).glob("*.ipynb"))
    assert notebooks and all(not cell.get("outputs") for nb in notebooks
                             for cell in json.loads(nb.read_text())["cells"] if cell["cell_type"] == "code")


def test_a_crash_an_endless_loop_and_a_raise_cost_only_their_parts(tmp_path):
    folder = copy_of("02_attention", tmp_path / "02_attention")
    with_change(folder, "attention.py", "    B, H, T, Dh = x.shape\n", "    B, H, T, Dh = x.shape\n    import os; os._exit(3)\n")
    with_change(folder, "attention.py", "    return 0.5 * x", "    while True:\n        pass\n    return 0.5 * x")
    with_change(folder, "attention.py", "        x = x + self.attn(self.ln1(x), keep)", "        raise KeyError('oops')")
    status, report, stderr = grade("02_attention", folder, "--time-limit", "4")
    assert status == 0, stderr
    parts = parts_of(report)
    assert parts["heads"]["score"] == 0 and "crashed" in parts["heads"]["feedback"]
    assert parts["mlp"]["score"] == 0 and "timed out after 4 s" in parts["mlp"]["feedback"]
    assert parts["encoder_layer"]["score"] == 0 and "KeyError: 'oops' (attention.py line" in parts["encoder_layer"]["feedback"]
    for name in ("attention_weights", "attention"):
        assert parts[name]["score"] == parts[name]["max_score"], parts[name]


def test_a_module_that_does_not_import_scores_zero_with_the_reason(tmp_path):
    folder = copy_of("02_attention", tmp_path / "02_attention")
    with_change(folder, "attention.py", "import math\n", "import math\ndef broken(:\n")
    status, report, stderr = grade("02_attention", folder)
    assert status == 0, stderr
    assert report["score"] == 0
    assert all("could not import attention.py: SyntaxError" in part["feedback"] for part in report["parts"])


def test_unreadable_submissions_exit_2_with_a_reason(tmp_path):
    assert grade("02_attention", tmp_path / "nowhere")[::2] == (2, f"grade.py: {tmp_path / 'nowhere'}: no such folder\n")
    status, _, stderr = grade("02_attention", tmp_path)
    assert status == 2 and "no attention.py in it" in stderr
    status, _, stderr = grade("99_nothing", tmp_path)
    assert status == 2 and "no assignment '99_nothing'" in stderr and "02_attention" in stderr


def test_public_mode_runs_only_the_tests_a_student_has(tmp_path):
    """A GELU right on [-6, 6] only: the public test (linspace(-6, 6)) passes, a hidden one (wider inputs) does not."""
    folder = with_change(copy_of("02_attention", tmp_path / "02_attention"), "attention.py",
                         "    return 0.5 * x * (1 + torch.tanh", "    x = x.clamp(-6, 6)\n    return 0.5 * x * (1 + torch.tanh")
    _, public, _ = grade("02_attention", folder, "--public")
    _, full, _ = grade("02_attention", folder)
    assert public["score"] == public["max_score"], public
    mlp = parts_of(full)["mlp"]
    assert mlp["score"] < mlp["max_score"] and "test_mlp_other_sizes (hidden)" in mlp["feedback"], mlp


def test_readable_report_without_json():
    done = subprocess.run([sys.executable, str(COURSE / "grade.py"), "02_attention", str(COURSE / "02_attention"),
                           "--public"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "02_attention: 12 / 12 points"
    assert any(line.split()[:2] == ["heads", "2/2"] for line in lines[1:])


def test_build_refuses_to_overwrite_without_being_asked(handout):
    done = subprocess.run([sys.executable, str(COURSE / "build.py"), str(handout)], capture_output=True, text=True)
    assert done.returncode == 2 and "exists: pass --overwrite" in done.stderr

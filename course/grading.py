"""What the assignments' tests.py files share: comparisons whose failure message is the student's feedback, swapping
a student's helper for the reference one so a part is graded on its own code only, and hypothesis settings.

A test is a function `test_<part>_<what>(student, reference)`: `student` is the submitted module, `reference` the
instructor's solution (course/<id>/), both imported by the grader. It passes by returning and fails by raising; an
AssertionError's message is shown to the student as it is, so write it as advice.
"""
import contextlib

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, settings

# Properties run the same examples on every grading (derandomize) and write no example database into the repository.
# No shrinking, one failure reported: a student sees the first failing example at once, not an ExceptionGroup after
# seconds of search.
PROPERTIES = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                      phases=(Phase.explicit, Phase.generate))


def randn(*shape, seed=0, scale=1.0):
    """A reproducible N(0, scale^2) float32 tensor of `shape`."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def as_array(x, what):
    """float64 NumPy of a tensor or array; AssertionError naming `what` for anything else (None from a stub...)."""
    if torch.is_tensor(x):
        return x.detach().cpu().double().numpy()
    if isinstance(x, (np.ndarray, np.generic, float, int)):
        return np.asarray(x, dtype=np.float64)
    raise AssertionError(f"{what}: expected a tensor or an array, got {type(x).__name__}")


def check_shape(actual, shape, what):
    got = tuple(actual.shape) if hasattr(actual, "shape") else type(actual).__name__
    assert got == tuple(shape), f"{what}: shape {got}, expected {tuple(shape)}"


def check_close(actual, expected, what, atol=1e-5, rtol=1e-4):
    """AssertionError saying the shape, or the largest error and where it is, when actual is not expected."""
    check_shape(actual, expected.shape, what)
    got, want = as_array(actual, what), as_array(expected, what)
    if not np.isfinite(got).all():
        raise AssertionError(f"{what}: {int((~np.isfinite(got)).sum())} values are NaN or infinite")
    error = np.abs(got - want)
    if np.all(error <= atol + rtol * np.abs(want)):
        return
    where = np.unravel_index(int(error.argmax()), error.shape)
    raise AssertionError(f"{what}: max abs error {error.max():.3g} at index {tuple(int(i) for i in where)} "
                         f"(got {got[where]:.6g}, expected {want[where]:.6g}; tolerance {atol:g} + {rtol:g} x |expected|)")


def matches(actual, expected, atol=1e-5, rtol=1e-4):
    """True when actual has expected's shape and values: for telling which known mistake a wrong answer is."""
    try:
        check_close(actual, expected, "", atol, rtol)
    except AssertionError:
        return False
    return True


def loaded(student_module, oracle_module, what):
    """student_module (an nn.Module the student built) holding oracle_module's weights, in eval mode; advice naming
    the oracle's parameters when they do not fit."""
    if student_module is None:
        raise AssertionError(f"{what}: the constructor gave None")
    try:
        student_module.load_state_dict(oracle_module.state_dict())
    except RuntimeError as error:
        raise AssertionError(f"{what}: siglip_min's weights do not load into yours; its parameters are "
                             f"{sorted(oracle_module.state_dict())}. {' '.join(str(error).split())[:400]}") from None
    return student_module.eval()


@contextlib.contextmanager
def replaced(module, **attributes):
    """Within the block, module.<name> is the given object (the reference's helper, usually); restored after."""
    saved = {name: getattr(module, name) for name in attributes}
    for name, value in attributes.items():
        setattr(module, name, value)
    try:
        yield module
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def from_reference(student, reference, *names):
    """replaced(student, name=reference.name for each name): grade one part with the others known to be right."""
    return replaced(student, **{name: getattr(reference, name) for name in names})

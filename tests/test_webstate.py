"""The page's error results (piximi_py.webstate.error_result), run in CPython: what the user is
shown as is, and what is an internal error with its traceback on the worker console."""
import numpy as np
import pytest

from piximi_py.io import ImageReadError
from piximi_py.webstate import error_result


def _result_of(fail):
    try:
        fail()
    except Exception as exc:  # noqa: BLE001 - error_result is called so, in the worker's except blocks
        return error_result(exc)
    raise AssertionError("did not fail")


def _refused_diameter():
    from piximi_py.diameter import check_diameter

    check_diameter(-4)


@pytest.mark.parametrize("fail, etype, message", [
    (_refused_diameter, "ValueError", "diameter must be positive, got -4"),
    (lambda: (_ for _ in ()).throw(ImageReadError("a.tif is empty (0 bytes)")), "ImageReadError",
     "a.tif is empty (0 bytes)"),
    (lambda: (_ for _ in ()).throw(LookupError("unknown image 'x'")), "LookupError", "unknown image 'x'"),
    (lambda: {}["cyto"], "InternalError", "internal error (KeyError: 'cyto')"),
    (lambda: np.zeros(3)[5], "InternalError", "internal error (IndexError: index 5 is out of bounds"),
])
def test_user_errors_read_as_they_are_and_internal_lookups_do_not(fail, etype, message, capsys):
    result = _result_of(fail)
    assert result["ok"] is False and result["error"]["type"] == etype
    assert result["error"]["message"].startswith(message), result
    logged = capsys.readouterr().err
    # a traceback for developers on the console, but not for a file that cannot be read
    assert ("Traceback" in logged) == (etype != "ImageReadError"), logged

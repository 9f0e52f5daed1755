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


def test_a_batch_zip_names_each_images_files_and_says_which():
    """Two images of one stem, or of stems differing only in case (one file on macOS and Windows),
    get files of their own, and batch_report.csv says which stem each image's files have."""
    import csv
    import io
    import zipfile

    from piximi_py.webexport import Batch

    batch = Batch()
    for name in ("a.tif", "A.png", "a.jpg"):
        batch.add(name, {"csv": b"label\n"})
    batch.fail("b.tif", "b.tif is empty (0 bytes)")
    with zipfile.ZipFile(io.BytesIO(batch.close())) as zf:
        names = zf.namelist()
        report = list(csv.DictReader(io.StringIO(zf.read("batch_report.csv").decode())))
    assert [r["outputs"] for r in report] == ["a", "A_2", "a_3", ""]
    assert {"a_measurements.csv", "A_2_measurements.csv", "a_3_measurements.csv"} <= set(names)
    assert [r["status"] for r in report] == ["segmented"] * 3 + ["failed"]

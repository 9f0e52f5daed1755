"""Bytecode for a wheel's Python modules, made by the Python that will run it (run in
Pyodide by ``tools/precompile.mjs``).

Pyodide keeps its file system in memory, so the bytecode Python writes on import
is lost with the page and every visit compiled numpy, tifffile and piximi_py again.
Each module's ``__pycache__`` entry is added (compressed, as the wheel's files are)
as an *unchecked* hash-based pyc (PEP 552): Python loads it without reading the
source, and the source stays beside it for tracebacks. Compiled extensions are
copied as they are.
"""
import base64
import hashlib
import importlib.util
import io
import zipfile
from importlib._bootstrap_external import _code_to_hash_pyc


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def precompile_wheel(wheel) -> bytes:
    """The wheel's bytes with a ``__pycache__/*.pyc`` beside every module; RECORD updated."""
    src = zipfile.ZipFile(io.BytesIO(bytes(wheel.to_py() if hasattr(wheel, "to_py") else wheel)))
    out = io.BytesIO()
    record_name, added = None, []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                record_name, record = info.filename, data.decode()
                continue
            dst.writestr(info, data)
            if info.filename.endswith(".py") and ".dist-info/" not in info.filename:
                code = compile(data, info.filename, "exec", dont_inherit=True)
                pyc = bytes(_code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False))
                name = importlib.util.cache_from_source(info.filename)
                dst.writestr(zipfile.ZipInfo(name, date_time=info.date_time), pyc, zipfile.ZIP_DEFLATED)
                added.append(_record_line(name, pyc))
        if record_name is not None:
            lines = [line for line in record.splitlines() if line]
            dst.writestr(record_name, "\n".join(lines[:-1] + added + lines[-1:]) + "\n")
    return out.getvalue()

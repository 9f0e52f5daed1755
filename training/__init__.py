"""Training, export and evaluation of piximi-py models (CPython + PyTorch only).

Nothing in this package ships to the page: the page gets the ONNX files and
``models/index.json`` that ``python build.py train``/``export`` write.
"""

"""The benchmarks: a package run from the repository root, ``python -m benchmarks.NAME`` (e.g.
``python -m benchmarks.quality --model shapes``); each module's docstring gives its commands. The modules import
each other as ``benchmarks.X`` (the shared page writer is :mod:`benchmarks._pages`) and the package as
``captum_gradeclip``; nothing here touches ``sys.path``.
"""

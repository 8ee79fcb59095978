"""homework-monitor: real-time detection of therapy homework assignment (Peretz et al. 2023).

One import namespace; layers import only downward:

1. ``homework_monitor.contract``: classes, tensor names, the model's input type, the classifier port;
2. core, no I/O: ``homework_monitor.stream.{schemas,config,windowing,validation,aggregation,
   processor,offline}``;
3. model: ``homework_monitor.model`` (torch: training, torch artifacts) over ``homework_monitor.runtime``
   (ONNX Runtime, no torch: what the Triton model imports);
4. adapters: ``homework_monitor.stream.{app,classifiers,metrics}``, ``homework_monitor.producers``,
   ``homework_monitor.deploy``, ``homework_monitor.training``;
5. the composition root: ``homework_monitor.cli``.

``lint-imports`` (contracts in ``pyproject.toml``) keeps it that way.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("homework-monitor")
except PackageNotFoundError:  # a source tree on sys.path without an install (the Triton stub)
    __version__ = "0+unknown"

"""One way to log: through MMF's writer during a run, so messages reach its
console and log files, else through Python logging."""

import logging
import sys


def log(message: str, *args, level: str = "info", name: str = "mmf_rec") -> None:
    if args:
        message = message % args
    if "mmf.common.registry" in sys.modules:
        from mmf.common.registry import registry

        writer = registry.get("writer", no_warning=True)
        if writer is not None:
            writer.write(message, level)
            return
    getattr(logging.getLogger(name), level)(message)


class _Logger:
    """``logging.Logger``'s info / warning / error, routed through :func:`log`."""

    def __init__(self, name: str):
        self.name = name

    def info(self, message, *args):
        log(message, *args, level="info", name=self.name)

    def warning(self, message, *args):
        log(message, *args, level="warning", name=self.name)

    def error(self, message, *args):
        log(message, *args, level="error", name=self.name)


def get_logger(name: str) -> _Logger:
    return _Logger(name)

"""Logging set-up for the command line: logfmt lines on stderr, quiet libraries."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["configure_logging"]

_NOISY = ("faust", "mode", "aiokafka", "kafka", "aiohttp", "clickhouse_driver", "chdb")


class _LogfmtFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # typeshed overload mismatch; UTC is the point

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace('"', "'")
        line = (f'ts={self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ")} '
                f'level={record.levelname.lower()} logger={record.name} msg="{message}"')
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info") -> None:
    """Send logs to stderr as ``key=value`` lines; third-party libraries only warn."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)

"""Unit tests run twice by ``make test``: on the compiled build, then on the Python sources.

A test marked ``python_source`` replaces a function or method inside a compiled module
(to count calls or to inject an error). Compiled modules call each other directly, so
such a replacement is not seen there: these tests run in the second pass
(``TOUCHPOINT_PURE_PYTHON=1``, see ``touchpoint/compiled.py``) and are skipped in the first.
"""

from __future__ import annotations

import pytest

from touchpoint import compiled


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if compiled.state() != "compiled":
        return
    skip = pytest.mark.skip(reason="patches a compiled module: runs in the Python-source pass "
                                   "(TOUCHPOINT_PURE_PYTHON=1, as make test does)")
    for item in items:
        if item.get_closest_marker("python_source"):
            item.add_marker(skip)

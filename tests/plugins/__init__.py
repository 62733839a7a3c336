"""Tests of the bundled plugins.

Neither a plugin folder nor scripts/ is a package: the worker puts a plugin's folder
on sys.path and imports its modules by plain name, and scripts run as
`python scripts/<name>.py`. Their folders are appended here so that the tests import
those modules by the same plain names.
"""

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
for _folder in (_REPO / "plugins" / "videotracker", _REPO / "scripts"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

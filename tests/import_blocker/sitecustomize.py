"""Makes the top-level packages named in BLOCKED_IMPORTS (comma-separated) unimportable, as if not installed.

Python imports ``sitecustomize`` at start-up from the first directory on the path that has one, so a
process started with this directory on PYTHONPATH (tests/test_slug.py) runs without those packages.
"""

import os
import sys
from importlib.abc import MetaPathFinder

BLOCKED = frozenset(name for name in os.environ.get("BLOCKED_IMPORTS", "").split(",") if name)


class BlockedImports(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by BLOCKED_IMPORTS)", name=fullname)
        return None


sys.meta_path.insert(0, BlockedImports())

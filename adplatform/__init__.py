"""The platform's shared parts: config, wire schemas, names, migrations, helpers and the CLI.

Importing it first checks the compiled hot path (``adplatform.native``): a build made from other sources
is removed before anything imports it, so no process ever runs code that is not in its sources.
"""

import sys

from adplatform.native import ensure_current

_removed = ensure_current()
if _removed is not None:
    print(_removed, file=sys.stderr)

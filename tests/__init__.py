"""The test suite.

On ``ADP_TEST_TOPOLOGY=cluster`` the session's Redis stores are a key namespace of its own on the cluster
stack (``tests/conftest.py``). It is chosen here, in the first module of the suite pytest imports, because
``adplatform.names`` fixes every key name when it is imported; child processes inherit it.
"""

from __future__ import annotations

import os
import uuid

if os.environ.get("ADP_TEST_TOPOLOGY") == "cluster":
    os.environ.setdefault("ADP_REDIS_NAMESPACE", f"t{uuid.uuid4().hex[:10]}")

"""``python -m adplatform.cli``: the same command as the ``adplatform`` console script."""

from __future__ import annotations

from adplatform.cli import main

main()

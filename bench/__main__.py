"""`python -m bench`: run every benchmark and write BENCHMARKS.md (see bench/run_all.py)."""

from __future__ import annotations

from bench.run_all import main

raise SystemExit(main())

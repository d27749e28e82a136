"""The embedded MuJoCo tabletop suite (ARCHITECTURE.md §6)."""

from benchmarks.tabletop.suite import TabletopSuite

__all__ = ["TabletopSuite"]

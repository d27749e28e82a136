"""The evaluation engine: plan a run (runner.py), play its episodes in-process (local.py) or over Ray
(ray_pool.py, ray_actors.py), one episode at a time (episodes.py, rollout.py), store them (store.py)
and compare policies with statistics (compare.py, stats.py)."""

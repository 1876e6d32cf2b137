"""Tasks: named datasets of (input, target) examples with a reference description.

Sources: generated instruction-induction tasks (``gen/...``), BIG-bench JSON tasks (``bigbench/...``) and user
files (a path to a .jsonl or .csv file). Use :func:`get_task` to load one and :func:`list_tasks` to list them.
"""

from soft2hard.tasks.base import Example, Splits, Task
from soft2hard.tasks.registry import get_task, list_tasks

__all__ = ["Example", "Splits", "Task", "get_task", "list_tasks"]

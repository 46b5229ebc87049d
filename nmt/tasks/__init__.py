"""Tasks: what differs between translation and language modelling, asked for by everything else.

>>> from nmt.config import config_from_dict
>>> lm = config_from_dict({"task": "lm", "model": {"decoder": {"attention": "none"}}})
>>> task = task_for(lm)
>>> task.name, task.carries_state, task.units
('lm', False, 'lines')
"""

from __future__ import annotations

from nmt.config import Config
from nmt.tasks.base import PreparedData, Task

__all__ = ["PreparedData", "Task", "task_for"]


def task_for(config: Config) -> Task:
    """The task of ``config.task`` (a registry lookup; the tasks import TensorFlow)."""
    from nmt.tasks.lm import LanguageModelTask
    from nmt.tasks.translation import TranslationTask

    registry: dict[str, type[Task]] = {TranslationTask.name: TranslationTask, LanguageModelTask.name: LanguageModelTask}
    return registry[config.task](config)

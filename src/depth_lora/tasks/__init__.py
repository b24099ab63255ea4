"""The tasks a run can learn, each one object (runs.task.Task): `depth` and `complete`.

Importing this package registers them with runs.task, where `task_of` finds them; `import depth_lora`
imports it first.
"""

from depth_lora.runs.task import register
from depth_lora.tasks.completion import CompletionTask
from depth_lora.tasks.depth import DepthTask

DEPTH = register(DepthTask())
COMPLETE = register(CompletionTask())

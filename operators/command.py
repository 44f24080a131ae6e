"""Task type ``command``: run the spec's ``command``/``args`` in ``image``, nothing more."""

from __future__ import annotations

from operators.container_command import ContainerCommandOperator


class CommandOperator(ContainerCommandOperator):
    """A generic container command; the spec must give the command (there is no default)."""

    task_type = "command"

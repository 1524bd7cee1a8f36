"""A resource shared by a test session: started by its first user, stopped by its last one."""

from __future__ import annotations

import contextlib
from typing import Any, Optional


class SessionResource:
    """Subclasses define ``_open(stack)``: start the resource, register its teardown on ``stack``
    and return its settings. ``acquire``/``release`` count the users; a failed start tears down what
    it had started and the next ``acquire`` tries again."""

    users = 0
    settings: Optional[Any] = None
    _stack: Optional[contextlib.ExitStack] = None

    @classmethod
    def _open(cls, stack: contextlib.ExitStack):
        raise NotImplementedError

    @classmethod
    def acquire(cls):
        if cls.users == 0:
            stack = contextlib.ExitStack()
            try:
                settings = cls._open(stack)
            except BaseException:
                stack.close()
                raise
            cls._stack, cls.settings = stack, settings
        cls.users += 1
        return cls.settings

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users == 0 and cls._stack is not None:
            stack, cls._stack, cls.settings = cls._stack, None, None
            stack.close()  # in reverse: stops the resource, restores the environment, removes its folder

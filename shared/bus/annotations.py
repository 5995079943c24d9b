"""Handler parameter annotations that resolve on the event loop.

FastStream's ``faststream.rabbit.annotations.RabbitMessage`` is ``Annotated[RabbitMessage,
Context("message")]``; ``Context.use`` is a plain function, and fast_depends (3.0) runs a custom
field's plain ``use`` through ``anyio.to_thread.run_sync``: every message that reaches a handler taking
``message: RabbitMessage`` hops to a worker thread and back only to read a context variable. Under load
that hop costs CPU (thread wake-up, GIL hand-over) and latency (the loop's thread may hold the GIL for
a whole switch interval before the worker thread gets it). The ``Context`` here does the same lookup
as a coroutine, which fast_depends awaits on the loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream import Context
from faststream.rabbit.message import RabbitMessage as _RabbitMessage

# ``faststream.Context`` is a factory; the class it returns lives in a private module.
_ContextField: type[Any] = type(Context("message"))


class LoopContext(_ContextField):
    """``faststream.Context`` resolved on the event loop (no worker thread)."""

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = super().use(**kwargs)
        return result


#: drop-in for ``faststream.rabbit.annotations.RabbitMessage`` in handler signatures
RabbitMessage = Annotated[_RabbitMessage, LoopContext("message")]

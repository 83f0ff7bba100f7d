"""The one table from errors to what a chunk worker does next: retry or fail the chunk.

``RETRY`` re-raises, so the host makes the message visible again after
``visibilityTimeout``. On the last attempt (``dequeue_count >= maxDequeueCount``) a
retryable error becomes ``DEAD_LETTER``: the chunk is recorded failed, then the error is
re-raised and the host moves the message to ``<queue>-poison``. ``FAIL_CHUNK`` errors can
never succeed on retry (the input itself is wrong): the chunk is recorded failed with the
error's message and the message is settled at once.
"""

from __future__ import annotations

import enum
from typing import Final

from shared.errors import (
    BatchInputError,
    ExecutionError,
    NotFoundError,
    NotReadyError,
    PackageError,
    RequestError,
    ScorefnError,
)

__all__ = ["Action", "ACTIONS", "action_for"]


class Action(enum.Enum):
    """What to do with a chunk whose processing raised."""

    RETRY = "retry"
    FAIL_CHUNK = "fail-chunk"
    DEAD_LETTER = "dead-letter"


#: error class -> action, looked up along the exception's MRO; anything else (storage
#: errors, bugs) retries.
ACTIONS: Final[dict[type[BaseException], Action]] = {
    BatchInputError: Action.FAIL_CHUNK,
    NotFoundError: Action.FAIL_CHUNK,  # the model named by the job is not served here
    RequestError: Action.FAIL_CHUNK,
    NotReadyError: Action.RETRY,  # models still loading
    PackageError: Action.RETRY,  # a model failed to load: a redeploy may fix it
    ExecutionError: Action.RETRY,
    ScorefnError: Action.RETRY,
}


def action_for(exc: BaseException, dequeue_count: int, max_dequeue_count: int) -> Action:
    """The action for ``exc`` raised on attempt ``dequeue_count`` of ``max_dequeue_count``."""
    action = Action.RETRY
    for cls in type(exc).__mro__:
        found = ACTIONS.get(cls)
        if found is not None:
            action = found
            break
    if action is Action.RETRY and dequeue_count >= max_dequeue_count:
        return Action.DEAD_LETTER
    return action

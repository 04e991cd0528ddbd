"""Errors raised by the ``ml`` library.

Callers (services, Celery tasks) catch these by type: a ``DataError`` means the input is
wrong and retrying will not help; ``TrainingCancelled`` is a cooperative stop requested by
the caller; ``CheckpointError`` means a stored model cannot be used with this code.
"""

from __future__ import annotations


class MLError(Exception):
    """Base class of every error raised on purpose by ``ml``."""


class DataError(MLError, ValueError):
    """The arrays handed to ``ml`` cannot be used (a ``ValueError``, so generic callers cope)."""


class EmptyDataError(DataError):
    """There is nothing to train on or to embed."""


class SingleClassError(DataError):
    """A classifier needs at least two classes among its labels."""


class NonFiniteError(DataError):
    """An array contains NaN or infinity."""


class ShapeMismatchError(DataError):
    """Arrays that must agree in length or width do not."""


class CheckpointError(MLError):
    """A checkpoint file is missing, unreadable or does not fit the requested encoder."""


class TrainingCancelled(MLError):
    """Training stopped because ``should_stop()`` returned True.

    Attributes:
        step: The number of optimiser steps completed before the stop.
    """

    def __init__(self, step: int) -> None:
        super().__init__(f"training cancelled after {step} steps")
        self.step = step


class TrainingDiverged(MLError):
    """The training loss became NaN or infinite: the weights are lost, nothing is worth saving.

    Attributes:
        step: The first step (1-based) whose loss was not finite.
        loss: That loss.
    """

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged: the loss was {loss} at step {step} (lower the learning rate, base_lr)")
        self.step = step
        self.loss = loss


class DistributedRunError(MLError):
    """Pretraining in several processes (torchrun) failed; the message quotes why."""

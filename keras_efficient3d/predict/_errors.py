"""The error prediction reports as one line, and how its messages name the options."""

import contextlib
import contextvars


class PredictError(ValueError):
    """Bad input for prediction (source, labels, options that do not fit the model):
    reported as one line."""


def one_line(err) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


# The command line's flag for each argument of the Python functions (`run`, `predict_video`,
# `resolve_spec`, `check_options`) where the two names differ.
_FLAG_OF = {"window": "frames", "output_video": "output", "model": "model_file"}
_COMMAND_LINE = contextvars.ContextVar("keras_efficient3d_predict_command_line", default=False)


def option(name: str) -> str:
    """How a message names the option the Python argument `name` sets: its flag under the
    command line (``--frames``), the argument itself from Python (``window``): a caller of
    `predict_video(window=0)` typed no ``--frames``."""
    return f"--{_FLAG_OF.get(name, name)}" if _COMMAND_LINE.get() else name


@contextlib.contextmanager
def command_line_names():
    """Messages raised inside name the command line's flags (`option`)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)

"""The error prediction reports as one line."""


class PredictError(ValueError):
    """Bad input for prediction (source, labels, options that do not fit the model):
    reported as one line."""


def one_line(err) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())

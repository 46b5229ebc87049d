"""nmt: recurrent sequence-to-sequence translation on TensorFlow and Keras 3.

>>> import nmt
>>> translator = nmt.load("runs/en-ja")                       # doctest: +SKIP
>>> translator.translate(["Good morning."])[0][0].text         # doctest: +SKIP
"""

__version__ = "0.1.0"


def load(run_dir, weights: str = "best"):
    """Loads a trained run directory as a :class:`nmt.inference.Translator`."""
    from nmt.inference import load as _load

    return _load(run_dir, weights)

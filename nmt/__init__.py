"""nmt: recurrent translation and language models on TensorFlow and Keras 3.

>>> import nmt
>>> translator = nmt.load("runs/en-ja")                       # doctest: +SKIP
>>> translator.translate("Good morning.")[0].text              # doctest: +SKIP
>>> nmt.load("runs/lm-en").next_words("She went to the", k=5)  # doctest: +SKIP
[('hospital', 0.13), ('station', 0.114), ...]
"""

__version__ = "0.1.0"


def load(run_dir, weights: str = "best", task: str | None = None, shortlist: bool | None = None):
    """Loads a trained run directory: a :class:`nmt.translator.Translator`, or for a language model
    a :class:`nmt.language_model.LanguageModelPredictor` (see :func:`nmt.inference.load`)."""
    from nmt.inference import load as _load

    return _load(run_dir, weights, task, shortlist)


def load_ensemble(members, mode: str = "log_probs"):
    """Translation runs (``"runs/a"``, or ``("runs/a", "ckpt-16000")``) decoding as one model: a
    :class:`nmt.translator.Translator` over an :class:`nmt.ensemble.Ensemble` (see
    :func:`nmt.inference.load_ensemble`)."""
    from nmt.inference import load_ensemble as _load_ensemble

    return _load_ensemble(members, mode)

"""What every model of the papers shares: its outputs, its config, its width."""

from __future__ import annotations

import inspect

import keras

from stn_tf.layers import transformers_in
from stn_tf.models import presets
from stn_tf.models.registry import width_for_budget

__all__ = ["OUTPUTS", "PaperModel"]

OUTPUTS = ("scores", "logits", "all")


class PaperModel(keras.Model):
    """Base of the papers' models: functional Keras models built in ``__init__``.

    Each subclass builds its layers, then its functional graph, in ``__init__``
    (keras-hub's form) and passes the graph's logits, and its transformers' θ and
    output if it has them, to ``_outputs``, which returns what the ``outputs``
    argument asks for:

    - ``scores`` (the default): class probabilities ``[B, classes]`` (``[B, T,
      classes]`` for sequences), so the standard Keras flow works as is:
      ``model.compile("sgd", "sparse_categorical_crossentropy")``.
    - ``logits``: the same before the softmax.
    - ``all``: the dict ``{"logits", "theta", "transformed"}`` (only ``logits`` for
      models without a transformer), what the trainer, the pictures and the
      exports read. θ is ``[B, P]``, or ``[B, K, P]`` for K transformers;
      ``transformed`` is the transformer's output before any pooling.

    ``get_config()`` returns the constructor's arguments (the resolved ``width``
    among them), so ``from_config(get_config())`` rebuilds the same model and
    ``.keras`` files load without ``custom_objects``.

    Preset subclasses (``STCNN`` of ``STNClassifier``) fix some arguments of
    their base; they name them in ``FIXED``, and these stay out of their config.
    """

    FIXED: tuple[str, ...] = ()

    @staticmethod
    def _outputs(outputs: str, logits, theta=None, transformed=None):
        if outputs not in OUTPUTS:
            raise ValueError(
                f"outputs must be one of {OUTPUTS}. Received: outputs={outputs!r}"
            )
        if outputs == "logits":
            return logits
        if outputs == "scores":
            return keras.layers.Softmax(name="scores")(logits)
        result = {"logits": logits}
        if theta is not None:
            result.update(theta=theta, transformed=transformed)
        return result

    @classmethod
    def accepted_args(cls) -> list[str]:
        """The arguments the class takes (its own and its base's, less those its
        preset fixes), in the order of the signatures."""
        names = []
        for klass in cls.__mro__:
            if klass is PaperModel:
                break
            for p in inspect.signature(klass.__init__).parameters.values():
                if (
                    p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                    and p.name not in names
                ):
                    names.append(p.name)
        return [n for n in names if n != "self" and n not in cls.FIXED]

    def _remember(self, init_locals: dict) -> None:
        """Keeps the constructor's arguments for ``get_config`` (keras-hub's
        ``# === Config ===`` section): pass ``locals()`` at the end of ``__init__``,
        where resolved values (the budget's width) have replaced ``None``."""
        self._init_args = {
            k: init_locals[k]
            for k in self.accepted_args()
            if k in init_locals and k != "name"
        }

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._init_args}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, **overrides):
        """The model of a preset: a bundled name (``stn_tf.models.list_presets()``)
        or a directory ``save_to_preset`` wrote, with its trained weights. The
        preset must hold this class (or a subclass): ``STCNN.from_preset`` refuses
        a CNN's. ``overrides``: arguments that change no weight (``outputs``)."""
        return presets.from_preset(preset, cls=cls, **overrides)

    def save_to_preset(self, directory, metadata=None, weights_dtype="float32"):
        """Writes the model to ``directory`` in keras-hub's preset layout
        (``config.json``, ``model.weights.h5``, ``metadata.json``), which
        ``from_preset`` loads back. See ``stn_tf.models.presets.save_to_preset``."""
        return presets.save_to_preset(self, directory, metadata, weights_dtype)

    @property
    def transformers(self) -> list:
        """The model's spatial transformer layers (their variables are the
        localisation nets)."""
        return transformers_in(self)


def resolve_width(width, param_budget: int, build) -> int:
    """``width``, or when it is None the width whose model has about
    ``param_budget`` parameters; ``build(width)`` makes the model."""
    if width is not None:
        if isinstance(width, bool) or int(width) != width or width < 1:
            raise ValueError(f"width must be a positive integer. Received: {width!r}")
        return int(width)
    return width_for_budget(lambda w: build(w).count_params(), param_budget)

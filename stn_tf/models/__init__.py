"""The papers' models as Keras model classes, and one registry of their names.

    from stn_tf.models import STCNN
    model = STCNN((60, 60, 1), 10, transform="tps", pool=2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y)
    model.save("st_cnn.keras")  # keras.saving.load_model("st_cnn.keras")

Every model is a functional Keras model built in its class's ``__init__``
(keras-hub's form): ``get_config`` returns the constructor's arguments, and the
``outputs`` argument says what it returns (class scores by default; the
trainer's dict ``{"logits", "theta", "transformed"}`` with ``outputs="all"``).

- :mod:`stn_tf.models.classifier`: ``STNClassifier`` and its presets ``FCN``,
  ``CNN``, ``STFCN``, ``STCNN``, ``STFCN2x``, ``STCNN3D``, ``CNN3D`` (STN §4.1,
  A.1-A.4).
- :mod:`stn_tf.models.sequences`: ``RNNSPN``, ``SequenceClassifier`` and its
  presets ``FFNSPN``, ``ConvNet`` (the RNN-SPN paper).
- :mod:`stn_tf.models.svhn`: ``SVHNClassifier`` and ``SVHNCNN``,
  ``STCNNSingle``, ``STCNNMulti`` (STN §4.2, A.5).
- :mod:`stn_tf.models.cub`: ``STInception`` (STN §4.3, A.6).
- :mod:`stn_tf.models.presets`: trained weights bundled with the package
  (``list_presets()``, ``from_preset(name)``, ``STCNN.from_preset(name)``,
  ``model.save_to_preset(dir)``), in keras-hub's layout.

``MODELS`` maps each ``--model`` name to its class (``build_model(name, ...)``
builds one as the trainer does).
"""

from stn_tf.models.base import OUTPUTS, PaperModel
from stn_tf.models.classifier import (
    CNN,
    CNN3D,
    FCN,
    STCNN,
    STCNN3D,
    STFCN,
    MaxPooling3D,
    STFCN2x,
    STNClassifier,
)
from stn_tf.models.cub import STInception
from stn_tf.models.presets import from_preset, list_presets
from stn_tf.models.registry import (
    MODELS,
    PARAM_BUDGET,
    TRANSFORMS_2D,
    ModelSpec,
    build_model,
    get_model,
    models_for,
    register,
)
from stn_tf.models.sequences import (
    FFNSPN,
    RNNSPN,
    STARTS,
    ConvNet,
    SequenceClassifier,
)
from stn_tf.models.svhn import (
    SVHNCNN,
    STCNNMulti,
    STCNNSingle,
    SVHNClassifier,
)

__all__ = [
    "CNN",
    "CNN3D",
    "FCN",
    "FFNSPN",
    "MODELS",
    "OUTPUTS",
    "PARAM_BUDGET",
    "RNNSPN",
    "STARTS",
    "STCNN",
    "STCNN3D",
    "STFCN",
    "SVHNCNN",
    "TRANSFORMS_2D",
    "ConvNet",
    "MaxPooling3D",
    "ModelSpec",
    "PaperModel",
    "STCNNMulti",
    "STCNNSingle",
    "STFCN2x",
    "STInception",
    "STNClassifier",
    "SVHNClassifier",
    "SequenceClassifier",
    "build_model",
    "from_preset",
    "get_model",
    "list_presets",
    "models_for",
    "register",
]

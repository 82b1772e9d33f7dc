"""stn_tf: Spatial Transformer Networks and Recurrent Spatial Transformer Networks.

``sampler`` samples images at coordinates, ``transforms`` turns parameters into
sampling grids, ``layers`` wraps both in Keras layers and ``models`` holds the
papers' models; ``pipelines`` makes their datasets and ``export`` writes
SavedModels and TFLite models.

``import stn_tf`` registers every layer and model class with Keras, so any
``.keras`` file of ours loads with ``keras.saving.load_model`` and no
``custom_objects``.
"""

import os as _os
from importlib import metadata as _metadata

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512
# VNNI, BF16 or AMX; on AVX2 CPUs it leaves them off, and our training steps run
# 1.7-2.5x slower (docs/benchmarks.md, "oneDNN on AVX2 CPUs"). Ask for them unless
# the user chose (``TF_ENABLE_ONEDNN_OPTS=0`` turns them off); TensorFlow reads the
# variable when it is first imported, so this only acts when stn_tf comes first.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

try:
    __version__ = _metadata.version("stn_tf")
except _metadata.PackageNotFoundError:  # run from a clone that was never installed
    __version__ = "0+unknown"

from stn_tf import layers, models  # noqa: E402 - register the Keras classes

__all__ = ["__version__", "layers", "models"]

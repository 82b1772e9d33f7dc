"""stn_tf: Spatial Transformer Networks and Recurrent Spatial Transformer Networks.

``sampler`` samples images at coordinates, ``transforms`` turns parameters into
sampling grids, ``layers`` wraps both in Keras layers and ``models`` holds the
papers' models; ``pipelines`` makes their datasets and ``export`` writes
SavedModels and TFLite models.

``import stn_tf`` registers every layer and model class with Keras, so any
``.keras`` file of ours loads with ``keras.saving.load_model`` and no
``custom_objects``.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("stn_tf")
except _metadata.PackageNotFoundError:  # run from a clone that was never installed
    __version__ = "0+unknown"

from stn_tf import layers, models  # noqa: E402 - register the Keras classes

__all__ = ["__version__", "layers", "models"]

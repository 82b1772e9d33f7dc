"""stn_tf: Spatial Transformer Networks and Recurrent Spatial Transformer Networks.

``sampler`` samples images at coordinates, ``transforms`` turns parameters into
sampling grids, ``layers`` wraps both in Keras layers. Import the layers from
``stn_tf.layers`` (they need the TensorFlow Keras backend).
"""

__version__ = "0.1.0"

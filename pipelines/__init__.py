"""tf.data input pipelines: MNIST-format sources and on-the-fly distortions."""

"""Export of trained stn_tf models: SavedModel for TF Serving and TFLite for LiteRT."""

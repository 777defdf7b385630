"""Registered MMF processors: turn an item's raw text and images into the
tensors that the text and image encoders take."""

"""The VGG16 backbone and the three model variants built on it."""

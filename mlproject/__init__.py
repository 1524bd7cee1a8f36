"""alloop: train, register, serve and keep improving VGG16 defect classifiers.

The package follows the flow of the product:
data -> models (VGG16 variants) -> training (MLflow entry points) -> evaluation
-> registry (pyfunc model, promotion) -> serving / labelling loop (integrations/, cli).
"""

__version__ = "0.1.0"

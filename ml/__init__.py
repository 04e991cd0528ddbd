"""rgzlabel's machine-learning library: plain PyTorch / scikit-learn / astropy, no Django or Celery."""

__version__ = "0.1.0"

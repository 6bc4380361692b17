"""locallearn: training neural networks with local error signals (Nøkland & Eidnes, 2019)."""
__version__ = "0.2.0"

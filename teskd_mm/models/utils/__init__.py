from .prediction_memory import PredictionMemory

__all__ = ['PredictionMemory']

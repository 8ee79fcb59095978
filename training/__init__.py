"""Data, self-supervised pretraining, fine-tuning, baselines, evaluation and export for the classifier."""

"""Training: the shared fine-tuning engine, the pre-training loop plugins call, augmentation,
resumable and data-parallel pre-training, and the per-stage timing of a run."""

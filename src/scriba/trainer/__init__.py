"""The Lightning scaffolding that training and pretraining both stand on: trainer set-up, data module, callbacks,
optimizers and schedules, progress."""

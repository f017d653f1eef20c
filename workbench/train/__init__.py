"""Training: run records and checkpoints, SFT now, reward model and PPO next."""

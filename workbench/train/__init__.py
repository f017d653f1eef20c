"""Training: SFT, the reward model and PPO, with their run records, checkpoints and exports."""

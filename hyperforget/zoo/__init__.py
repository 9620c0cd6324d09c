"""The weight zoo: unlearning trajectories from θ0 and retrain-shaped endpoints, written as sharded
checkpoints with their per-class losses and an index the hypernetwork trains on."""

"""What only `bench/` and its tests use: the held-out class-set study and the hypernetwork reports."""

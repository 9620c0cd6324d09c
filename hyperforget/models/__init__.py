"""Classifiers and what is done with them: the nets and their flat weights, seeded (vmapped) training,
cached features, the unlearning objectives and the metrics."""

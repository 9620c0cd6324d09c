"""Is an unlearned model told apart from a retrain? The gates and the verification behind them (LiRA,
linear probe, relearn time, MIA) against reference retrains."""

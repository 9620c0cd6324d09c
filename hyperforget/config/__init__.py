"""One validated `params.yaml`: the typed sections (`params`) and every method's and gate's options (`options`)."""

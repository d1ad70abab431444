"""`imgwatch eval`: how well the model finds edited copies of the user's own photos, and which
thresholds to use (see docs/eval.md)."""

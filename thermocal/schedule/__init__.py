"""Schedule functions of the step, the versioned file model, and (later) framework adapters."""

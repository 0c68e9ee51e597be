"""What a run writes for later: training curves (CSV), reflection samples, step timing, W&B tables and artifacts,
provenance, and the offline W&B run reader."""

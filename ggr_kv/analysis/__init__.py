"""Layer 7, turning run folders into figures, Markdown reports and papermill sweeps."""

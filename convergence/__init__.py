"""Would the rendered plan converge into a working cluster? (analysis.py; docs/ARCHITECTURE.md, Convergence check)."""

"""gpu-stack: load this stack's config, then declare its resources."""

from stacks.compose import main

main()

"""gpu-stack: load this stack's config, then declare its resources.

Bad config raises config.errors.ConfigError, a pulumi.RunError: the language
host prints its message alone, never a Python traceback.
"""

from stacks.compose import main

main()

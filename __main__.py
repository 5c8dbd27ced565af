"""gpu-stack: load this stack's config, then declare its resources."""

import pulumi

from stacks.compose import main
from stacks.errors import ConfigError

try:
    main()
except ConfigError as e:
    # The language host prints a RunError's message alone; any other exception comes with a
    # Python traceback, which bad config must never show.
    raise pulumi.RunError(str(e)) from None

"""python -m doctor STACK ...: see doctor/command.py."""

import sys

from doctor.command import main

sys.exit(main())

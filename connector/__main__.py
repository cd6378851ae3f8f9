"""``python -m connector``."""

import sys

from connector.cli import main

sys.exit(main())

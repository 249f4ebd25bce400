"""``python -m agent run [--config FILE]``: the agent daemon on its leanest import path."""

import sys

from agent.daemon import main

sys.exit(main())

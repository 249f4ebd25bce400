"""``python -m agent run [--config FILE]``: the agent daemon on its leanest import path."""

import sys

from shared.logs import quiet_library_warnings

quiet_library_warnings()

from agent.daemon import main  # noqa: E402  (after the filter: imports may warn)

sys.exit(main())

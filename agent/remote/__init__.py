"""Remote maintenance: signed commands, sessions and consent, SSH, the tunnel, the shell helper.

Nothing here imports asyncssh, websockets or pydantic at import time: the idle
agent loads the command dispatcher and the session controller, and the session
stack comes with the first session.
"""

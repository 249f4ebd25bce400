"""The gateway tells an operator's ssh client why its session ended, for every close reason."""

from __future__ import annotations

import asyncssh
import pytest

from server.gateway.channels import describe_loss
from shared.tunnel import SESSION_CLOSED_CODE
from shared.wire import CLOSE_REASONS


@pytest.mark.parametrize("reason", sorted(CLOSE_REASONS))
def test_every_close_reason_has_its_own_words(reason: str) -> None:
    text = describe_loss(asyncssh.DisconnectError(SESSION_CLOSED_CODE, reason))
    assert text.startswith("the session ")
    assert text.endswith(f" ({reason})")
    assert text != f"the session ended ({reason})"  # the fallback of an unknown reason


def test_an_unknown_reason_is_named_not_trusted() -> None:
    text = describe_loss(asyncssh.DisconnectError(SESSION_CLOSED_CODE, "x" * 40))
    assert text == f"the session ended ({'x' * 40})"
    assert describe_loss(ConnectionResetError()) == "the connection to the device was lost"

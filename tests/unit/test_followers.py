"""`Followers`: the config-reload seam. A check that raises refuses the config before any
follower applies it; an apply that raises is logged and the others still run."""

from __future__ import annotations

import pytest

from hybridfast.config import Config
from hybridfast.errors import ConfigError
from hybridfast.pipeline.reconfigure import Followers


def test_checks_run_before_applies_and_a_failing_apply_is_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    followers = Followers()

    def refuse(config: Config) -> None:
        if config.router.expected_output_tokens == 1:
            raise ConfigError("refused")

    def broken(_config: Config) -> None:
        raise RuntimeError("bug")

    followers.add("a", lambda _c: seen.append("a"), refuse)
    followers.add("broken", broken)
    followers.add("b", lambda _c: seen.append("b"))
    bad = Config()
    bad.router.expected_output_tokens = 1
    with pytest.raises(ConfigError, match="refused"):
        followers.check(bad)
    assert seen == []
    followers.check(Config())
    followers.apply(Config())
    assert seen == ["a", "b"]
    assert "broken did not follow the new config" in caplog.text

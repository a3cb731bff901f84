"""Failed API keys, counted per client address in Redis, so that nobody can guess keys
through the API or the dashboard's log-in form.

After ``auth_failure_limit`` failed keys from one address, every further attempt from
it is refused with 429 (and ``Retry-After``) until ``auth_failure_window`` seconds after
the first failure — before the key is even looked up, so a guess can no longer succeed.
A valid key from the same address is refused as well while the address is blocked: the
counter cannot tell a guesser from its neighbour. Requests without any key are not
counted (they guess nothing).

The count lives in Redis (one key per address, expiring with the window), so all API
processes share it. When Redis cannot be reached the API still authenticates (fails
open) and logs that it could not count: the keys' 256 random bits, not this counter,
are what makes guessing hopeless; the counter only stops brute force early and loudly.

Behind a proxy or ingress the client address is the proxy's unless uvicorn trusts its
``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``, docs/operations.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from api.errors import TooManyRequests
from api.runtime import ApiRuntime
from fleet.settings import Settings

__all__ = ["AuthThrottle"]

_log = logging.getLogger(__name__)

#: One counter per client address.
KEY = "tlsfleet:auth-failures:{}"


@dataclass(frozen=True, slots=True)
class AuthThrottle:
    """The failed-key limit of one application (``limit`` 0: no limit)."""

    limit: int
    window: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthThrottle:
        return cls(settings.auth_failure_limit, settings.auth_failure_window)

    async def check(self, runtime: ApiRuntime, client: str | None) -> None:
        """Raise :class:`TooManyRequests` if ``client`` has used up its failed keys."""
        if self.limit <= 0 or client is None:
            return
        try:
            redis = await runtime.queue()
            async with redis.pipeline(transaction=False) as pipe:
                pipe.get(KEY.format(client))
                pipe.ttl(KEY.format(client))
                count, ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            _log.warning("failed-key limit not checked (Redis: %s)", type(exc).__name__)
            return
        if count is not None and int(count) >= self.limit:
            wait = max(int(ttl), 1)
            raise TooManyRequests(
                f"too many failed API keys from this address; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    async def failed(self, runtime: ApiRuntime, client: str | None) -> None:
        """Count one failed key from ``client`` (the window starts at its first)."""
        if self.limit <= 0 or client is None:
            return
        key = KEY.format(client)
        try:
            redis = await runtime.queue()
            async with redis.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=self.window, nx=True)
                pipe.incr(key)
                _, count = await pipe.execute()
        except (RedisError, OSError) as exc:
            _log.warning("failed key not counted (Redis: %s)", type(exc).__name__)
            return
        if int(count) == self.limit:
            _log.warning(
                "%s sent %d failed API keys: refused for up to %d s", client, count, self.window
            )

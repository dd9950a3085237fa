"""Sign-in tokens: JWTs signed with HS256 and the service's secret.

Decoding names the one accepted algorithm explicitly, so ``alg: none`` and algorithm-confusion tokens
(RS256/ES256 headers, other HMAC sizes) are refused before any signature check; ``exp``, ``iat``, ``sub``,
``iss`` and ``aud`` are required and checked. Our own claims: ``scope`` (space-separated) and ``ver``, the
user's token version at issue time: a password change or a disable bumps it, and older tokens stop
working at once.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "iss", "aud")
# Clock skew tolerated between the instances that issue and check tokens.
LEEWAY_SECONDS = 10


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why in words safe to show the caller."""


class ExpiredToken(InvalidToken):
    """The token was good and has run out (an open event stream ends saying so)."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    scopes: frozenset[str]
    version: int


class TokenIssuer:
    def __init__(self, secret: bytes, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self.issuer!r}, audience={self.audience!r})"

    def issue(self, username: str, scope: str, version: int) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": username,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "jti": secrets.token_hex(8),
            "scope": scope,
            "ver": version,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise ExpiredToken("the token has expired; sign in again at POST /token") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"the token is not signed with {ALGORITHM}") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise InvalidToken("the token was issued for another service") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is malformed or not yet valid") from None
        scope, version, subject = claims.get("scope"), claims.get("ver"), claims["sub"]
        if not isinstance(scope, str) or type(version) is not int or not isinstance(subject, str):
            raise InvalidToken("the token lacks the 'scope' or 'ver' claim")
        return TokenClaims(username=subject, scopes=frozenset(scope.split()), version=version)

"""The APIs' security settings (profile, bearer tokens, CORS, hosts, limits), defined once.

Both APIs' `Config` classes derive from these, so a variable means the same in either. In the
`dev` profile none of it is enforced (the APIs behave exactly as before the profiles existed);
`secure` turns all of it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr

from cart_contract.secrets import JWT_SECRET_NAME, ensure_secret_file, read_secret_file, secrets_dir
from cart_contract.settings import ROOT, RunDir, Settings

PROFILES = ("dev", "secure")

Profile = Annotated[Literal[PROFILES], Field(  # type: ignore[valid-type]
    validation_alias="CARTSTREAM_PROFILE",
    description="`dev`: open, loopback only; `secure`: bearer tokens, CORS and Host allow-lists, "
                "rate limits (docs/security.md)",
)]


def _csv(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


class AuthSettings(Settings):
    """What both APIs need to verify bearer tokens and guard browsers in the secure profile."""

    profile: Profile = "dev"
    run_dir: RunDir = ROOT / ".run"
    jwt_secret: Annotated[SecretStr | None, Field(
        validation_alias="JWT_SECRET",
        description="secure profile: the HS256 key tokens are signed with (else JWT_SECRET_FILE, "
                    "else `$RUN_DIR/secrets/jwt-hs256`, generated at first start)")] = None
    jwt_secret_file: Annotated[Path | None, Field(
        validation_alias="JWT_SECRET_FILE",
        description="secure profile: a file holding the HS256 key (Docker secrets)")] = None
    jwt_jwks_url: Annotated[str | None, Field(
        validation_alias="JWT_JWKS_URL",
        description="secure profile: verify tokens with this JWKS (an identity provider's keys, "
                    "RS/ES/PS algorithms) instead of the local HS256 key")] = None
    jwt_issuer: Annotated[str, Field(
        validation_alias="JWT_ISSUER", description="the `iss` every token must carry")] \
        = "cartstream"
    jwt_audience: Annotated[str, Field(
        validation_alias="JWT_AUDIENCE", description="the `aud` every token must carry")] \
        = "cartstream"
    jwt_admin_scope: Annotated[str, Field(
        validation_alias="JWT_ADMIN_SCOPE",
        description="the scope (`scope` or `scp` claim) that allows `/api/v1/carts` and any "
                    "customer's reads")] = "cartstream:admin"
    jwt_leeway_s: Annotated[int, Field(
        ge=0, validation_alias="JWT_LEEWAY_S",
        description="clock skew allowed on `exp`/`nbf`/`iat`")] = 10
    cors_origins: Annotated[str, Field(
        validation_alias="CORS_ORIGINS",
        description="origins (scheme://host[:port], comma-separated) browsers may call from; "
                    "secure profile: only these (empty: no cross-origin access); dev: these and "
                    "any http://localhost, 127.0.0.1 or [::1] page (the cart page)")] = ""
    allowed_hosts: Annotated[str, Field(
        validation_alias="ALLOWED_HOSTS",
        description="secure profile: Host header values accepted (comma-separated, port "
                    "ignored); others get 400")] = "localhost,127.0.0.1,::1"

    @property
    def secure(self) -> bool:
        """Whether the secure profile runs."""
        return self.profile == "secure"

    @property
    def cors_origin_set(self) -> frozenset[str]:
        """CORS_ORIGINS as a set."""
        return _csv(self.cors_origins)

    @property
    def allowed_host_set(self) -> frozenset[str]:
        """ALLOWED_HOSTS as a set, lower case."""
        return _csv(self.allowed_hosts.lower())

    @property
    def jwt_secret_path(self) -> Path:
        """The file the local HS256 key is read from (and generated into at first start)."""
        return self.jwt_secret_file or secrets_dir(self.run_dir) / JWT_SECRET_NAME

    def jwt_key(self) -> str:
        """The local HS256 key: JWT_SECRET, else JWT_SECRET_FILE, else the generated one."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        if self.jwt_secret_file is not None:
            return read_secret_file(self.jwt_secret_file)
        return ensure_secret_file(self.jwt_secret_path)


class WriteSecurity(AuthSettings):
    """The write API's limits in the secure profile."""

    rate_limit_commands: Annotated[int, Field(
        ge=1, validation_alias="RATE_LIMIT_COMMANDS",
        description="secure profile: commands one principal may send per RATE_LIMIT_WINDOW_S "
                    "(beyond: 429)")] = 300
    rate_limit_window_s: Annotated[int, Field(
        ge=1, validation_alias="RATE_LIMIT_WINDOW_S",
        description="secure profile: the rate limits' window")] = 60


class ReadSecurity(AuthSettings):
    """The read API's limits in the secure profile."""

    rate_limit_waits: Annotated[int, Field(
        ge=1, validation_alias="RATE_LIMIT_WAITS",
        description="secure profile: long-poll reads (`minOffset`) one principal may start per "
                    "RATE_LIMIT_WINDOW_S (beyond: 429)")] = 120
    rate_limit_window_s: Annotated[int, Field(
        ge=1, validation_alias="RATE_LIMIT_WINDOW_S",
        description="secure profile: the rate limits' window")] = 60
    max_waits_per_principal: Annotated[int, Field(
        ge=1, validation_alias="MAX_WAITS_PER_PRINCIPAL",
        description="secure profile: long-poll reads one principal may hold open at once, over "
                    "all instances (beyond: 429)")] = 2

"""fsspec storage options from the `[export]` settings (credentials stay here, never in output)."""

from __future__ import annotations

from typing import Any


def storage_options_from(export_settings: Any) -> dict[str, dict[str, Any]]:
    """`{"s3": {...}}` for fsspec from `export.s3_*` keys and the `export.storage_options` table.

    Keys (see the integration report): `s3_endpoint_url`, `s3_access_key_id`,
    `s3_secret_access_key`, `s3_region`, and `storage_options` (per protocol, passed through
    to fsspec, e.g. `{gcs = {token = "…"}}`). Unset keys are simply left out, so fsspec's
    own credential chain (environment, instance profile) applies.
    """
    options: dict[str, dict[str, Any]] = {
        protocol: dict(values) for protocol, values in (getattr(export_settings, "storage_options", None) or {}).items()
    }
    s3 = options.setdefault("s3", {})
    endpoint = getattr(export_settings, "s3_endpoint_url", "")
    key = getattr(export_settings, "s3_access_key_id", "")
    secret = getattr(export_settings, "s3_secret_access_key", "")
    region = getattr(export_settings, "s3_region", "")
    if endpoint:
        s3["endpoint_url"] = endpoint
    if key:
        s3["key"] = key
    if secret:
        s3["secret"] = secret
    if region:
        s3.setdefault("client_kwargs", {})["region_name"] = region
    return options

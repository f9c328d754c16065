"""Object stores (s3://, s3a://, gs://, abfss://, az://) for the Delta and Parquet connectors:
which storage options a URI gets (`[[storage]]`), and one prefix's objects listed, read,
written and deleted, with the noncurrent versions of a versioned S3 bucket.

Options are the keys deltalake takes (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`,
`AWS_ACCESS_KEY_ID`, ...): the same table is handed to deltalake and read here for the
listing. Anything the table does not give comes from the environment (the usual `AWS_*`
variables, or the SDK's own chain for credentials), so credentials never need to be in the
file.

- s3:// and s3a://: `pyarrow.fs.S3FileSystem` lists and reads (it releases the GIL, so a
  thread pool reads objects in parallel; Parquet is read by ranged GETs: the footer, then
  only the key column's chunks), boto3 lists and deletes object versions. boto3 is imported
  only when versions are looked at; without it, versions are reported not verified.
- gs://, abfss://, az://: deltalake's own object-store access (`DeltaStorageHandler`) lists
  and reads; versions are not looked at (reported not verified).

A permission refused by the store (HTTP 403, AccessDenied) raises `Denied`: the caller says
"not verified: <reason>", never verified. Nothing here is imported by `erasure --help`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

OBJECT_STORE_SCHEMES = ("s3://", "s3a://", "gs://", "abfss://", "az://")
S3_SCHEMES = ("s3://", "s3a://")
# objects read at once while scanning a prefix (network-bound: more than the cores)
SCAN_THREADS = 16


def is_object_store(uri: str) -> bool:
    return uri.startswith(OBJECT_STORE_SCHEMES)


def _norm_prefix(prefix: str) -> str:
    return prefix.rstrip("/")


def options_for(uri: str, storage: Iterable[Any], default: Mapping[str, str]) -> dict[str, str]:
    """The storage options for `uri`: those of the `[[storage]]` entry with the longest prefix
    that contains it (a whole path segment: `s3://lake` does not contain `s3://lake2/t`),
    else `default` (`[delta.storage_options]`). An entry's options replace the default, they
    are not merged with it: one bucket's endpoint or keys never leak into another's."""
    best, best_len = None, -1
    for entry in storage:
        p = _norm_prefix(entry.prefix)
        if (uri == p or uri.startswith(p + "/")) and len(p) > best_len:
            best, best_len = entry, len(p)
    return dict(best.options) if best is not None else dict(default)


def _lookup(options: Mapping[str, str], *names: str) -> str | None:
    """An option by any of its names (case-insensitive, as deltalake reads them), else the
    environment variable of the first name."""
    low = {k.lower(): v for k, v in options.items()}
    for n in names:
        if n.lower() in low:
            return low[n.lower()]
    return os.environ.get(names[0]) or None


class Denied(Exception):
    """The store refused a permission (listing, reading, deleting, listing versions)."""


def is_denied(exc: BaseException) -> bool:
    code = ""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = str(resp.get("Error", {}).get("Code", ""))
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 403:
            return True
    text = f"{code} {exc}"
    return any(s in text for s in ("AccessDenied", "ACCESS_DENIED", "Access Denied",
                                    "HTTP status 403", "response code: 403", "Forbidden",
                                    "AllAccessDisabled"))


@dataclass(frozen=True)
class Obj:
    rel: str                    # relative to the prefix, '/'-separated
    size: int
    mtime: float                # epoch seconds
    version_id: str | None = None   # a noncurrent version; None: the current object

    @property
    def ident(self) -> str:
        return self.rel if self.version_id is None else f"{self.rel}?versionId={self.version_id}"


class _RangeReader:
    """A read-only, seekable file over one object version, read by ranged GETs (boto3): a
    Parquet reader fetches the footer and the chunks it needs, not the whole object."""

    def __init__(self, client, bucket: str, key: str, version_id: str, size: int):
        self.client, self.bucket, self.key, self.vid = client, bucket, key, version_id
        self.size, self.pos, self.closed = size, 0, False

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key, VersionId=self.vid,
                                          Range=f"bytes={self.pos}-{end - 1}")["Body"].read()
        except Exception as exc:
            if is_denied(exc):
                raise Denied(f"reading a noncurrent version of {self.key.rsplit('/', 1)[-1]} "
                             "was refused (s3:GetObjectVersion)") from None
            raise
        self.pos += len(body)
        return body

    def close(self) -> None:
        self.closed = True


class ObjectPrefix:
    """One table's or dataset's prefix on an object store."""

    def __init__(self, uri: str, options: Mapping[str, str] | None = None):
        self.uri = uri.rstrip("/")
        self.options = dict(options or {})
        scheme, _, rest = self.uri.partition("://")
        self.scheme = scheme + "://"
        self.bucket, _, key = rest.partition("/")
        self.key = key.strip("/")
        self.is_s3 = self.scheme in S3_SCHEMES

    # ---- access ---------------------------------------------------------------------
    @functools.cached_property
    def fs(self):
        """A pyarrow FileSystem: S3FileSystem (bucket/key paths) for S3, else deltalake's
        storage handler rooted at the prefix (relative paths)."""
        if not self.is_s3:
            from deltalake.fs import DeltaStorageHandler
            from pyarrow.fs import PyFileSystem

            return PyFileSystem(DeltaStorageHandler(self.uri, self.options or None))
        from pyarrow.fs import S3FileSystem

        o = self.options
        kw: dict[str, Any] = {}
        endpoint = _lookup(o, "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "ENDPOINT_URL", "ENDPOINT")
        if endpoint:
            scheme, sep, host = endpoint.partition("://")
            kw["endpoint_override"] = host.rstrip("/") if sep else endpoint
            kw["scheme"] = scheme if sep else "https"
        region = _lookup(o, "AWS_REGION", "AWS_DEFAULT_REGION", "REGION")
        if region:
            kw["region"] = region
        key = _lookup(o, "AWS_ACCESS_KEY_ID", "ACCESS_KEY_ID")
        secret = _lookup(o, "AWS_SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY")
        if key and secret:
            kw.update(access_key=key, secret_key=secret,
                      session_token=_lookup(o, "AWS_SESSION_TOKEN", "AWS_TOKEN", "SESSION_TOKEN"))
        if (_lookup(o, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST") or "").lower() == "true":
            kw["force_virtual_addressing"] = True
        return S3FileSystem(**kw)

    @functools.cached_property
    def client(self):
        """A boto3 S3 client with the same endpoint, region and credentials (versions)."""
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

        o = self.options
        key = _lookup(o, "AWS_ACCESS_KEY_ID", "ACCESS_KEY_ID")
        secret = _lookup(o, "AWS_SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY")
        style = ("virtual" if (_lookup(o, "AWS_VIRTUAL_HOSTED_STYLE_REQUEST") or "").lower()
                 == "true" else "auto")
        return boto3.client(
            "s3", endpoint_url=_lookup(o, "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "ENDPOINT_URL",
                                       "ENDPOINT"),
            region_name=_lookup(o, "AWS_REGION", "AWS_DEFAULT_REGION", "REGION"),
            aws_access_key_id=key if key and secret else None,
            aws_secret_access_key=secret if key and secret else None,
            aws_session_token=(_lookup(o, "AWS_SESSION_TOKEN", "AWS_TOKEN", "SESSION_TOKEN")
                               if key and secret else None),
            config=BotoConfig(s3={"addressing_style": style},
                              max_pool_connections=SCAN_THREADS + 4))

    def _path(self, rel: str) -> str:
        if not self.is_s3:
            return rel
        return "/".join(p for p in (self.bucket, self.key, rel) if p)

    def _object_key(self, rel: str) -> str:
        return "/".join(p for p in (self.key, rel) if p)

    def _call(self, what: str, rel: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            if is_denied(exc):
                name = rel.rsplit("/", 1)[-1] or self.uri
                raise Denied(f"{what} {name} was refused") from None
            raise

    def listing(self) -> list[Obj]:
        """Every current object under the prefix."""
        from pyarrow.fs import FileSelector, FileType

        base = self._path("")
        infos = self._call("listing", "", self.fs.get_file_info,
                           FileSelector(base, allow_not_found=True, recursive=True))
        out = []
        strip = len(base) + 1 if base else 0
        for i in infos:
            if i.type != FileType.File:
                continue
            rel = i.path[strip:] if self.is_s3 else i.path
            mt = i.mtime.timestamp() if i.mtime is not None else 0.0
            out.append(Obj(rel, int(i.size or 0), mt))
        return sorted(out, key=lambda o: o.rel)

    def exists(self, rel: str) -> bool:
        from pyarrow.fs import FileType

        return self._call("looking up", rel, self.fs.get_file_info,
                          [self._path(rel)])[0].type == FileType.File

    def open(self, obj: Obj):
        """A seekable file of the object (or of one of its noncurrent versions)."""
        if obj.version_id is not None:
            return _RangeReader(self.client, self.bucket, self._object_key(obj.rel),
                                obj.version_id, obj.size)
        return self._call("reading", obj.rel, self.fs.open_input_file, self._path(obj.rel))

    def open_rel(self, rel: str):
        """A seekable file of the current object at `rel` (its size asked for first)."""
        return self._call("reading", rel, self.fs.open_input_file, self._path(rel))

    def read(self, obj: Obj) -> bytes:
        def _all() -> bytes:
            f = self.open(obj)
            try:
                return f.read()
            finally:
                f.close()

        return self._call("reading", obj.rel, _all)

    def put(self, rel: str, data: bytes) -> None:
        """One PUT: atomic on object stores (a reader sees the old object or the new one)."""
        def _write() -> None:
            with self.fs.open_output_stream(self._path(rel)) as s:
                s.write(data)

        self._call("writing", rel, _write)

    def delete(self, rel: str) -> None:
        self._call("deleting", rel, self.fs.delete_file, self._path(rel))

    # ---- versions (S3) --------------------------------------------------------------------
    def versioning(self) -> str | None:
        """"Enabled" or "Suspended" (noncurrent versions may exist), or None (never enabled:
        none can). Raises Denied without s3:GetBucketVersioning, ImportError without boto3."""
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except ImportError:
            raise
        except Exception as exc:
            if is_denied(exc):
                raise Denied(f"reading the versioning state of bucket {self.bucket} was "
                             "refused (s3:GetBucketVersioning)") from None
            raise
        return status or None

    def noncurrent(self) -> list[Obj]:
        """Every noncurrent version under the prefix (delete markers hold no data)."""
        prefix = self._object_key("")
        prefix = prefix + "/" if prefix else ""
        out = []
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for v in page.get("Versions", []):
                    if v.get("IsLatest"):
                        continue
                    out.append(Obj(v["Key"][len(prefix):], int(v.get("Size") or 0),
                                   v["LastModified"].timestamp(), v["VersionId"]))
        except Exception as exc:
            if is_denied(exc):
                raise Denied(f"listing the object versions under {self.uri} was refused "
                             "(s3:ListBucketVersions)") from None
            raise
        return sorted(out, key=lambda o: (o.rel, o.mtime))

    def current_version_id(self, rel: str) -> str | None:
        """The version id of the current object (None when the bucket is not versioned)."""
        try:
            vid = self.client.head_object(Bucket=self.bucket,
                                          Key=self._object_key(rel)).get("VersionId")
        except Exception as exc:
            if is_denied(exc):
                raise Denied(f"reading {rel.rsplit('/', 1)[-1]} was refused") from None
            raise
        return None if vid in (None, "null") else vid

    def delete_version(self, obj: Obj) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._object_key(obj.rel),
                                      VersionId=obj.version_id)
        except Exception as exc:
            if is_denied(exc):
                raise Denied(f"deleting a noncurrent version of {obj.rel.rsplit('/', 1)[-1]} "
                             "was refused (s3:DeleteObjectVersion)") from None
            raise


def versions_unchecked_reason(store: ObjectPrefix) -> str | None:
    """Why the noncurrent versions under `store` cannot be looked at, or None when they can."""
    if not store.is_s3:
        return (f"object versions under {store.uri} were not listed (only s3:// buckets' "
                "versions are), so a noncurrent version holding the subject would not be found")
    try:
        import boto3  # noqa: F401
    except ImportError:
        return (f"object versions under {store.uri} were not listed: boto3 is not installed "
                "(pip install 'erasure[s3]')")
    return None

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("identifier", "boot_id", "keys")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    identifier: bytes
    boot_id: bytes
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, identifier: _Optional[bytes] = ..., boot_id: _Optional[bytes] = ..., keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("kid", "public_key_package")
    KID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    kid: str
    public_key_package: bytes
    def __init__(self, kid: _Optional[str] = ..., public_key_package: _Optional[bytes] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("boot_id", "commitments", "ttl_seconds")
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    boot_id: bytes
    commitments: _containers.RepeatedScalarFieldContainer[bytes]
    ttl_seconds: int
    def __init__(self, boot_id: _Optional[bytes] = ..., commitments: _Optional[_Iterable[bytes]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class AnnounceRequest(_message.Message):
    __slots__ = ("commitments",)
    COMMITMENTS_FIELD_NUMBER: _ClassVar[int]
    commitments: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, commitments: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AnnounceResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("kind", "value", "host", "path", "method", "context_extensions", "headers", "policy_sha256", "requested_audience", "requested_scopes", "requested_ttl_seconds", "request_attributes")
    class ContextExtensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_SHA256_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_SCOPES_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    value: bytes
    host: str
    path: str
    method: str
    context_extensions: _containers.ScalarMap[str, str]
    headers: _containers.ScalarMap[str, str]
    policy_sha256: str
    requested_audience: str
    requested_scopes: _containers.RepeatedScalarFieldContainer[str]
    requested_ttl_seconds: int
    request_attributes: bytes
    def __init__(self, kind: _Optional[str] = ..., value: _Optional[bytes] = ..., host: _Optional[str] = ..., path: _Optional[str] = ..., method: _Optional[str] = ..., context_extensions: _Optional[_Mapping[str, str]] = ..., headers: _Optional[_Mapping[str, str]] = ..., policy_sha256: _Optional[str] = ..., requested_audience: _Optional[str] = ..., requested_scopes: _Optional[_Iterable[str]] = ..., requested_ttl_seconds: _Optional[int] = ..., request_attributes: _Optional[bytes] = ...) -> None: ...

class SignRequest(_message.Message):
    __slots__ = ("message", "commitment_list", "evidence", "request_id")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_LIST_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    commitment_list: bytes
    evidence: Evidence
    request_id: str
    def __init__(self, message: _Optional[bytes] = ..., commitment_list: _Optional[bytes] = ..., evidence: _Optional[_Union[Evidence, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SignResponse(_message.Message):
    __slots__ = ("signature_share",)
    SIGNATURE_SHARE_FIELD_NUMBER: _ClassVar[int]
    signature_share: bytes
    def __init__(self, signature_share: _Optional[bytes] = ...) -> None: ...

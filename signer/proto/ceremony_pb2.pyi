from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CeremonyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CEREMONY_KIND_UNSPECIFIED: _ClassVar[CeremonyKind]
    CEREMONY_KIND_DKG: _ClassVar[CeremonyKind]
    CEREMONY_KIND_RESHARE: _ClassVar[CeremonyKind]
    CEREMONY_KIND_DEAL: _ClassVar[CeremonyKind]
CEREMONY_KIND_UNSPECIFIED: CeremonyKind
CEREMONY_KIND_DKG: CeremonyKind
CEREMONY_KIND_RESHARE: CeremonyKind
CEREMONY_KIND_DEAL: CeremonyKind

class Parameters(_message.Message):
    __slots__ = ("ceremony_id", "kind", "min_participants", "dealers", "recipients", "old_public_key_package", "replace_existing_key")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MIN_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    DEALERS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    OLD_PUBLIC_KEY_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_EXISTING_KEY_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: bytes
    kind: CeremonyKind
    min_participants: int
    dealers: _containers.RepeatedScalarFieldContainer[int]
    recipients: _containers.RepeatedScalarFieldContainer[int]
    old_public_key_package: bytes
    replace_existing_key: bool
    def __init__(self, ceremony_id: _Optional[bytes] = ..., kind: _Optional[_Union[CeremonyKind, str]] = ..., min_participants: _Optional[int] = ..., dealers: _Optional[_Iterable[int]] = ..., recipients: _Optional[_Iterable[int]] = ..., old_public_key_package: _Optional[bytes] = ..., replace_existing_key: _Optional[bool] = ...) -> None: ...

class Announcement(_message.Message):
    __slots__ = ("ceremony_id", "identifier", "parameters_digest", "ephemeral_public_key", "round1")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ROUND1_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: bytes
    identifier: int
    parameters_digest: bytes
    ephemeral_public_key: bytes
    round1: bytes
    def __init__(self, ceremony_id: _Optional[bytes] = ..., identifier: _Optional[int] = ..., parameters_digest: _Optional[bytes] = ..., ephemeral_public_key: _Optional[bytes] = ..., round1: _Optional[bytes] = ...) -> None: ...

class Confirmation(_message.Message):
    __slots__ = ("ceremony_id", "identifier", "public_key_package")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: bytes
    identifier: int
    public_key_package: bytes
    def __init__(self, ceremony_id: _Optional[bytes] = ..., identifier: _Optional[int] = ..., public_key_package: _Optional[bytes] = ...) -> None: ...

class SignedStatement(_message.Message):
    __slots__ = ("signer", "body", "certificate", "signature")
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signer: int
    body: bytes
    certificate: bytes
    signature: bytes
    def __init__(self, signer: _Optional[int] = ..., body: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SealedShare(_message.Message):
    __slots__ = ("sender", "recipient", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: int
    recipient: int
    ciphertext: bytes
    def __init__(self, sender: _Optional[int] = ..., recipient: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("identifier", "public_key_package", "kid")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    identifier: int
    public_key_package: bytes
    kid: str
    def __init__(self, identifier: _Optional[int] = ..., public_key_package: _Optional[bytes] = ..., kid: _Optional[str] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("parameters",)
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    parameters: bytes
    def __init__(self, parameters: _Optional[bytes] = ...) -> None: ...

class BeginResponse(_message.Message):
    __slots__ = ("announcement",)
    ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    announcement: SignedStatement
    def __init__(self, announcement: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class DealRequest(_message.Message):
    __slots__ = ("ceremony_id", "announcements")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: bytes
    announcements: _containers.RepeatedCompositeFieldContainer[SignedStatement]
    def __init__(self, ceremony_id: _Optional[bytes] = ..., announcements: _Optional[_Iterable[_Union[SignedStatement, _Mapping]]] = ...) -> None: ...

class DealResponse(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedCompositeFieldContainer[SealedShare]
    def __init__(self, shares: _Optional[_Iterable[_Union[SealedShare, _Mapping]]] = ...) -> None: ...

class StageRequest(_message.Message):
    __slots__ = ("ceremony_id", "announcements", "shares", "dealer_commitment", "dealer_ephemeral_public_key")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCEMENTS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    DEALER_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    DEALER_EPHEMERAL_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: bytes
    announcements: _containers.RepeatedCompositeFieldContainer[SignedStatement]
    shares: _containers.RepeatedCompositeFieldContainer[SealedShare]
    dealer_commitment: bytes
    dealer_ephemeral_public_key: bytes
    def __init__(self, ceremony_id: _Optional[bytes] = ..., announcements: _Optional[_Iterable[_Union[SignedStatement, _Mapping]]] = ..., shares: _Optional[_Iterable[_Union[SealedShare, _Mapping]]] = ..., dealer_commitment: _Optional[bytes] = ..., dealer_ephemeral_public_key: _Optional[bytes] = ...) -> None: ...

class StageResponse(_message.Message):
    __slots__ = ("confirmation",)
    CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    confirmation: SignedStatement
    def __init__(self, confirmation: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("ceremony_id", "confirmations")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: bytes
    confirmations: _containers.RepeatedCompositeFieldContainer[SignedStatement]
    def __init__(self, ceremony_id: _Optional[bytes] = ..., confirmations: _Optional[_Iterable[_Union[SignedStatement, _Mapping]]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("public_key_package", "kid")
    PUBLIC_KEY_PACKAGE_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    public_key_package: bytes
    kid: str
    def __init__(self, public_key_package: _Optional[bytes] = ..., kid: _Optional[str] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("ceremony_id", "culprit", "reason")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    CULPRIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: bytes
    culprit: int
    reason: str
    def __init__(self, ceremony_id: _Optional[bytes] = ..., culprit: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

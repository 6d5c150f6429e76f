"""The engine's botocore sessions: how a successful answer's JSON becomes Python, and the
User-Agent its requests carry.

botocore reads a rest-json answer by walking its model shape by shape, with a dispatch and a
check for every value: for an answer of a hundred flow associations that is about 0.28 ms of
CPU a call, a fifth of all the call costs. The sessions the engine makes its clients from
read such an answer with orjson instead, then pass it through a reader made once per output
shape (``reader``), which keeps what botocore's parser keeps: the model's members, nulls left
out, every value of the model's type. Anything else is botocore's to read, exactly as before:
an error, a body that is not a JSON object or holds a value of another type than the model
says, and every shape with a timestamp, a blob, a float, a document, a union, a member
renamed on the wire or bound to a header, the status code or the payload.

The parser is put in through botocore's public seams: a session's ``response_parser_factory``
component (``register_component``), whose ``create_parser`` wraps the parser it would make.

botocore builds its User-Agent again for every request, twice (before it signs, and once
more before it sends, to add the SDK's feature metrics): 34 us each on the development
machine, 4% of a call's CPU. The engine's clients are given theirs, made once
(``user_agent``: a client's ``Config(user_agent=...)``): connect-bulk's name first, as
CloudTrail's ``userAgent`` shows who made a change, then the libraries under it.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from functools import cache
from typing import Any

import orjson
from aiobotocore.parsers import AioResponseParserFactory
from aiobotocore.session import AioSession, get_session
from botocore.model import Shape
from botocore.utils import lowercase_dict

from .errors import aws_setup_refused

Reader = Callable[[Any], Any]
_SCALARS: dict[str, tuple[type, ...]] = {
    "string": (str,), "boolean": (bool,), "integer": (int,), "long": (int,),
}


class Mismatch(ValueError):
    """A value that is not of its model's type: botocore reads the answer instead."""


def _scalar(types: tuple[type, ...]) -> Reader:
    def read(value: Any) -> Any:
        # bool is an int to isinstance; a boolean is never read as an integer here.
        if type(value) not in types:
            raise Mismatch(f"{type(value).__name__} where the model says {types[0].__name__}")
        return value

    return read


_READ_SCALAR = {name: _scalar(types) for name, types in _SCALARS.items()}


def _list(member: Reader) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not list:
            raise Mismatch("not a list")
        return [None if item is None else member(item) for item in value]

    return read


def _map(key: Reader, value_reader: Reader) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise Mismatch("not a map")
        # botocore keeps a null value of a map (not of a structure)
        return {key(k): None if v is None else value_reader(v) for k, v in value.items()}

    return read


def _structure(members: dict[str, Reader]) -> Reader:
    strings = {name for name, read in members.items() if read is _READ_SCALAR["string"]}

    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise Mismatch("not an object")
        kept = {}
        for name, item in value.items():
            if item is None:
                continue
            if name in strings:
                if type(item) is not str:
                    raise Mismatch(f"{name} is not a string")
                kept[name] = item
            elif name in members:
                kept[name] = members[name](item)
        return kept

    return read


def reader(shape: Shape | None, _making: frozenset[str] = frozenset()) -> Reader | None:
    """The reader of a successful answer's body for ``shape``; None when botocore must read
    it (a type or a binding this module does not read the way botocore does)."""
    if shape is None or shape.name in _making:
        return None  # a shape that contains itself: botocore's
    making = _making | {shape.name}
    kind = shape.type_name
    if kind in _READ_SCALAR:
        return _READ_SCALAR[kind]
    if kind == "list":
        member = reader(shape.member, making)
        return None if member is None else _list(member)
    if kind == "map":
        key = reader(shape.key, making)
        value = reader(shape.value, making)
        return None if key is None or value is None else _map(key, value)
    if kind != "structure" or shape.is_document_type or shape.is_tagged_union \
            or shape.serialization.get("payload"):
        return None
    members: dict[str, Reader] = {}
    for name, member_shape in shape.members.items():
        where = member_shape.serialization
        if where.get("location") or where.get("name", name) != name \
                or where.get("eventstream"):
            return None
        read = reader(member_shape, making)
        if read is None:
            return None
        members[name] = read
    return _structure(members)


class PlainJSON:
    """A rest-json parser that reads a successful answer of a readable shape itself and gives
    every other to the parser it wraps (``parse``; anything else is the wrapped parser's)."""

    def __init__(self, parser: Any, readers: dict[Shape, Reader | None]) -> None:
        self._parser = parser
        self._readers = readers  # by output shape, shared by the factory's parsers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    async def parse(self, response: dict[str, Any], shape: Shape | None) -> Any:
        if response["status_code"] < 300 and shape is not None:
            if shape not in self._readers:
                self._readers[shape] = reader(shape)
            read = self._readers[shape]
            if read is not None:
                try:
                    parsed = read(orjson.loads(response["body"] or b"{}"))
                except (orjson.JSONDecodeError, Mismatch):
                    parsed = None
                if parsed is not None:
                    parsed["ResponseMetadata"] = _metadata(response)
                    return parsed
        return await self._parser.parse(response, shape)


def _metadata(response: dict[str, Any]) -> dict[str, Any]:
    """What botocore puts in an answer's ``ResponseMetadata``."""
    headers = response["headers"]
    metadata: dict[str, Any] = {}
    if "x-amzn-requestid" in headers:
        metadata["RequestId"] = headers["x-amzn-requestid"]
    elif "x-amz-request-id" in headers:
        metadata["RequestId"] = headers["x-amz-request-id"]
        metadata["HostId"] = headers.get("x-amz-id-2", "")
    metadata["HTTPStatusCode"] = response["status_code"]
    metadata["HTTPHeaders"] = lowercase_dict(headers)
    algorithm = response.get("context", {}).get("checksum", {}).get("response_algorithm")
    if algorithm:
        metadata["ChecksumAlgorithm"] = algorithm
    return metadata


class Parsers(AioResponseParserFactory):  # type: ignore[misc]
    """The response parser factory of the engine's sessions."""

    def __init__(self) -> None:
        super().__init__()
        #: by output shape, as the clients' models hold them (a shape is its own key: the
        #: dict keeps it alive, so no other shape takes its place); None: botocore's to read
        self.readers: dict[Shape, Reader | None] = {}

    def create_parser(self, protocol_name: str) -> Any:
        parser = super().create_parser(protocol_name)
        return PlainJSON(parser, self.readers) if protocol_name == "rest-json" else parser


def botocore_session() -> AioSession:
    """A new botocore session that reads answers with ``Parsers``; its clients are to be given
    ``user_agent()`` as their ``Config(user_agent=...)``."""
    session = get_session()
    session.register_component("response_parser_factory", Parsers())
    session.user_agent_extra = ""  # the clients' User-Agent is ``user_agent``'s, whole
    return session


def open_session(profile: str | None) -> tuple[Any, str]:
    """The engine's aioboto3 session of ``profile`` (answers read with ``Parsers``) and the
    User-Agent its clients are to be given. The AWS config and credentials files are read
    here: a profile that is not there, or a file botocore cannot parse, is a ``UsageError``
    (exit 2) said before any call, and for a new run before its directory is made."""
    import aioboto3
    from botocore.exceptions import ConfigParseError, ProfileNotFound

    core = botocore_session()
    try:
        session = aioboto3.Session(botocore_session=core, profile_name=profile)
        app_id = core.get_config_variable("user_agent_appid")
    except (ProfileNotFound, ConfigParseError) as exc:
        raise aws_setup_refused(exc, profile) from exc
    return session, user_agent(app_id)


@cache
def user_agent(app_id: str | None = None) -> str:
    """The engine's requests' User-Agent: connect-bulk, the SDK, Python and the OS, and the
    application ID the user set (``sdk_ua_app_id``, ``AWS_SDK_UA_APP_ID``), if any."""
    import aiobotocore
    import botocore

    from . import __version__

    agent = (f"connect-bulk/{__version__} aiobotocore/{aiobotocore.__version__} "
             f"botocore/{botocore.__version__} Python/{platform.python_version()} "
             f"{platform.system()}/{platform.release()}")
    return f"{agent} app/{app_id}" if app_id else agent

"""What a real kube-apiserver checks before it stores an Event, ported for the emulator.

The emulator in `rds_csi.testing.apiserver` is only useful if a request it accepts would also be
accepted by a real server, and one it rejects would be rejected with the same status.  So this
module follows the Go code paths rather than a Python idea of them:

* decoding like `encoding/json` into the versioned Go struct: wrong JSON types and unparsable
  timestamps are 400s, unknown fields are dropped with a warning;
* `metav1.Time` parsed with `time.RFC3339` and serialised to the second, `metav1.MicroTime` parsed
  with exactly six fractional digits (the trap kubernetes-asyncio's `isoformat()` walks into);
* `pkg/apis/core/validation/events.go` (legacy, eventTime and events.k8s.io/v1 rules, lengths in
  UTF-8 bytes) and the generic ObjectMeta checks, with Go's error texts.

Objects are kept in one "canonical" form: the core/v1 Event shape with every known field present
(zero values included), timestamps as aware UTC datetimes (None for Go's zero time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "CORE",
    "CORE_EVENT",
    "EVENTS_GROUP",
    "EVENTS_V1_EVENT",
    "DecodeError",
    "FieldError",
    "GoNumber",
    "aggregate_message",
    "core_to_v1",
    "decode_object",
    "encode_object",
    "format_micro_time",
    "format_time",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_qualified_name",
    "parse_micro_time",
    "parse_time",
    "v1_to_core",
    "validate_event_create",
    "validate_event_update",
    "validate_object_meta",
    "validate_object_meta_update",
]

JSON = Any

CORE = ""
"""The API group of core/v1 (the legacy group has an empty name)."""
EVENTS_GROUP = "events.k8s.io"

# pkg/apis/core/validation/events.go
REPORTING_INSTANCE_LENGTH_LIMIT = 128
ACTION_LENGTH_LIMIT = 128
REASON_LENGTH_LIMIT = 128
NOTE_LENGTH_LIMIT = 1024
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024


# --------------------------------------------------------------------------- Go formatting


def go_quote(text: str) -> str:
    """`strconv.Quote`, close enough for error messages."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = ['"']
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _time_quote(text: str) -> str:
    """The time package's own `quote`: non-ASCII and control bytes as \\xNN."""
    out = ['"']
    for ch in text:
        if ord(ch) >= 0x80 or ord(ch) < 0x20:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
        else:
            out.append("\\" + ch if ch in '"\\' else ch)
    out.append('"')
    return "".join(out)


class GoRepr(str):
    """A bad value already rendered the way Go's `%v`/`%#v`/`String()` would print it."""


def go_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, GoRepr):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    return str(value)


# --------------------------------------------------------------------------- field errors

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
TOO_LONG = "FieldValueTooLong"
_TYPE_TEXT = {REQUIRED: "Required value", INVALID: "Invalid value", TOO_LONG: "Too long"}


@dataclass(frozen=True)
class FieldError:
    """One `field.Error`: becomes a StatusCause {reason: type, message: body, field}."""

    type: str
    field: str
    bad_value: object = None
    detail: str = ""

    def body(self) -> str:
        text = _TYPE_TEXT[self.type]
        if self.type == INVALID:
            text += ": " + go_value(self.bad_value)
        if self.detail:
            text += ": " + self.detail
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError(REQUIRED, path, None, detail)


def _invalid(path: str, value: object, detail: str) -> FieldError:
    return FieldError(INVALID, path, value, detail)


def aggregate_message(errors: Iterable[object]) -> str:
    """`ErrorList.ToAggregate().Error()`: duplicates dropped, brackets for more than one."""
    seen: list[str] = []
    for err in errors:
        text = str(err)
        if text not in seen:
            seen.append(text)
    if len(seen) == 1:
        return seen[0]
    return "[" + ", ".join(seen) + "]"


# --------------------------------------------------------------------------- name rules

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = _DNS_LABEL + r"(\." + _DNS_LABEL + r")*"
_LABEL_KEY = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _LABEL_KEY + ")?"
_DNS_LABEL_RE = re.compile(_DNS_LABEL)
_DNS_SUBDOMAIN_RE = re.compile(_DNS_SUBDOMAIN)
_LABEL_KEY_RE = re.compile(_LABEL_KEY)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE)

_DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character"
)
_LABEL_KEY_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)


def _blen(text: str) -> int:
    """Go's len(string): UTF-8 bytes."""
    return len(text.encode())


def _max_len(limit: int) -> str:
    return f"must be no more than {limit} bytes"


def _regex_error(msg: str, regex: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{regex}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{regex}')"


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if _blen(value) > 63:
        errs.append(_max_len(63))
    if not _DNS_LABEL_RE.fullmatch(value):
        if _DNS_SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(_DNS_LABEL_MSG, _DNS_LABEL, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if _blen(value) > 253:
        errs.append(_max_len(253))
    if not _DNS_SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(_DNS_SUBDOMAIN_MSG, _DNS_SUBDOMAIN, "example.com"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """`IsQualifiedName` (= `IsLabelKey`): optional DNS-subdomain prefix, '/', a 63-byte name."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        key_rule = _regex_error(_LABEL_KEY_MSG, _LABEL_KEY, "MyName", "my.name", "123-abc")
        return [
            f"a valid label key {key_rule} with an optional DNS subdomain prefix and '/' "
            "(e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _blen(name) > 63:
        errs.append("name part " + _max_len(63))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append(
            "name part " + _regex_error(_LABEL_KEY_MSG, _LABEL_KEY, "MyName", "my.name", "123-abc")
        )
    return errs


def is_label_value(value: str) -> list[str]:
    errs = []
    if _blen(value) > 63:
        errs.append(_max_len(63))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE, "MyValue", "my_value", "12345"))
    return errs


def path_segment_name(name: str, prefix: bool) -> list[str]:
    """`IsPathSegmentName`/`Prefix`: what every object name must satisfy to live in a URL."""
    if not prefix and name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{bad}'" for bad in ("/", "%") if bad in name]


def dns_subdomain_name(name: str, prefix: bool) -> list[str]:
    """`NameIsDNSSubdomain`: a generateName prefix may end in '-'."""
    if prefix and len(name) > 1 and name.endswith("-"):
        name = name[:-1] + "a"
    return is_dns1123_subdomain(name)


# --------------------------------------------------------------------------- Go time parsing

_RFC3339 = "2006-01-02T15:04:05Z07:00"
_RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"
_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class GoTimeError(ValueError):
    """A `*time.ParseError`; str() is Go's message."""


def _parse_error(value: str, layout: str, value_elem: str, layout_elem: str) -> GoTimeError:
    return GoTimeError(
        f"parsing time {_time_quote(value)} as {_time_quote(layout)}: cannot parse "
        f"{_time_quote(value_elem)} as {_time_quote(layout_elem)}"
    )


def _getnum(value: str, fixed: bool) -> tuple[int, str] | None:
    if not value or not value[0].isdigit() or not value[0].isascii():
        return None
    if len(value) < 2 or not (value[1].isdigit() and value[1].isascii()):
        return None if fixed else (int(value[0]), value[1:])
    return int(value[:2]), value[2:]


def _days_in(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


_RANGES = {"01": ("month", 1, 12), "15": ("hour", 0, 23), "04": ("minute", 0, 59)}
_RANGES["05"] = ("second", 0, 59)


def _parse_go_time(value: str, micro: bool) -> datetime | None:
    """`time.Parse(RFC3339 | RFC3339Micro, value)` for the two layouts metav1 uses."""
    layout = _RFC3339_MICRO if micro else _RFC3339

    def out_of_range(what: str) -> GoTimeError:
        return GoTimeError(f"parsing time {_time_quote(value)}: {what} out of range")

    steps = [("", "2006"), ("-", "01"), ("-", "02"), ("T", "15"), (":", "04"), (":", "05")]
    steps += [("", ".000000")] if micro else []
    steps += [("", "Z07:00")]
    rest = value
    numbers: dict[str, int] = {}
    nsec = offset = 0
    for literal, std in steps:
        if not rest.startswith(literal):
            raise _parse_error(value, layout, rest, literal)
        rest = rest[len(literal) :]
        here = rest
        if std == "2006":
            if len(rest) < 4 or not (rest[:4].isdigit() and rest[:4].isascii()):
                raise _parse_error(value, layout, here, std)
            numbers[std], rest = int(rest[:4]), rest[4:]
        elif std in ("01", "02", "15", "04", "05"):
            got = _getnum(rest, fixed=std != "15")  # the hour may have one digit
            if got is None:
                raise _parse_error(value, layout, here, std)
            numbers[std], rest = got
            if std in _RANGES:
                what, low, high = _RANGES[std]
                if not low <= numbers[std] <= high:
                    raise out_of_range(what)
            if std == "05" and not micro and len(rest) >= 2 and rest[0] in ".,":
                # time.Parse accepts a fraction the layout does not mention.
                end = 1
                while end < len(rest) and rest[end].isdigit() and rest[end].isascii():
                    end += 1
                if end > 1:
                    nsec, rest = int(rest[1:end][:9].ljust(9, "0")), rest[end:]
        elif std == ".000000":
            digits = rest[1:7]
            if len(rest) < 7 or rest[0] not in ".," or not (digits.isdigit() and digits.isascii()):
                raise _parse_error(value, layout, here, std)
            nsec, rest = int(digits) * 1000, rest[7:]
        elif rest.startswith("Z"):
            rest = rest[1:]
        else:
            if len(rest) < 6 or rest[3] != ":" or rest[0] not in "+-":
                raise _parse_error(value, layout, here, std)
            hours, minutes = _getnum(rest[1:3], True), _getnum(rest[4:6], True)
            if hours is None or minutes is None:
                raise _parse_error(value, layout, here, std)
            if hours[0] > 24:
                raise out_of_range("time zone offset hour")
            if minutes[0] > 60:
                raise out_of_range("time zone offset minute")
            offset = (hours[0] * 60 + minutes[0]) * 60 * (1 if rest[0] == "+" else -1)
            rest = rest[6:]
    if rest:
        raise GoTimeError(f"parsing time {_time_quote(value)}: extra text: {_time_quote(rest)}")
    year, month, day = numbers["2006"], numbers["01"], numbers["02"]
    if day < 1 or day > _days_in(year, month):
        raise out_of_range("day")
    try:
        local = datetime(year, month, day, numbers["15"], numbers["04"], numbers["05"])
        parsed = (local - timedelta(seconds=offset)).replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:  # year 0, or beyond Python's datetime
        raise out_of_range("year") from exc
    parsed = parsed.replace(microsecond=nsec // 1000)
    return None if parsed == _ZERO_TIME else parsed


def parse_time(value: str) -> datetime | None:
    """A `metav1.Time` from JSON: RFC3339, any fraction accepted, kept to the second."""
    parsed = _parse_go_time(value, micro=False)
    return None if parsed is None else parsed.replace(microsecond=0)


def parse_micro_time(value: str) -> datetime | None:
    """A `metav1.MicroTime` from JSON: exactly six fractional digits, or a 400."""
    return _parse_go_time(value, micro=True)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_time_string(value: datetime | None) -> GoRepr:
    """`time.Time.String()` of a UTC time, as validation errors print it."""
    moment = value or _ZERO_TIME
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return GoRepr(f"{text} +0000 UTC")


# --------------------------------------------------------------------------- JSON <-> Go struct


class GoNumber(float):
    """A JSON number with a fraction or exponent, keeping its literal for Go's error text."""

    literal: str

    def __new__(cls, literal: str) -> GoNumber:
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


class DecodeError(ValueError):
    """What `json.Unmarshal` into the Go struct returned; becomes a 400 BadRequest."""


@dataclass(frozen=True)
class Scalar:
    kind: str  # string | int32 | int64 | bool | time | microtime | any | strmap | strlist
    go_type: str


@dataclass(frozen=True)
class ListOf:
    item: Struct
    go_type: str


@dataclass(frozen=True)
class Field:
    json: str
    type: Scalar | Struct | ListOf
    omitempty: bool = True
    pointer: bool = False


@dataclass(frozen=True)
class Struct:
    go_type: str
    fields: tuple[Field, ...] = field(default=())

    def by_name(self) -> dict[str, Field]:
        return {f.json: f for f in self.fields}


STRING = Scalar("string", "string")
INT32 = Scalar("int32", "int32")
INT64 = Scalar("int64", "int64")
BOOL = Scalar("bool", "bool")
TIME = Scalar("time", "v1.Time")
MICROTIME = Scalar("microtime", "v1.MicroTime")
ANY = Scalar("any", "v1.FieldsV1")
STRMAP = Scalar("strmap", "map[string]string")
STRLIST = Scalar("strlist", "[]string")

_OWNER_REFERENCE = Struct(
    "v1.OwnerReference",
    (
        Field("apiVersion", STRING, omitempty=False),
        Field("kind", STRING, omitempty=False),
        Field("name", STRING, omitempty=False),
        Field("uid", STRING, omitempty=False),
        Field("controller", BOOL, pointer=True),
        Field("blockOwnerDeletion", BOOL, pointer=True),
    ),
)
_MANAGED_FIELDS_ENTRY = Struct(
    "v1.ManagedFieldsEntry",
    (
        Field("manager", STRING),
        Field("operation", STRING),
        Field("apiVersion", STRING),
        Field("time", TIME, pointer=True),
        Field("fieldsType", STRING),
        Field("fieldsV1", ANY, pointer=True),
        Field("subresource", STRING),
    ),
)
OBJECT_META = Struct(
    "v1.ObjectMeta",
    (
        Field("name", STRING),
        Field("generateName", STRING),
        Field("namespace", STRING),
        Field("selfLink", STRING),
        Field("uid", STRING),
        Field("resourceVersion", STRING),
        Field("generation", INT64),
        Field("creationTimestamp", TIME),
        Field("deletionTimestamp", TIME, pointer=True),
        Field("deletionGracePeriodSeconds", INT64, pointer=True),
        Field("labels", STRMAP),
        Field("annotations", STRMAP),
        Field("ownerReferences", ListOf(_OWNER_REFERENCE, "[]v1.OwnerReference")),
        Field("finalizers", STRLIST),
        Field("managedFields", ListOf(_MANAGED_FIELDS_ENTRY, "[]v1.ManagedFieldsEntry")),
    ),
)
_REFERENCE_FIELDS = (
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
)
OBJECT_REFERENCE = Struct("v1.ObjectReference", tuple(Field(n, STRING) for n in _REFERENCE_FIELDS))
EVENT_SOURCE = Struct("v1.EventSource", (Field("component", STRING), Field("host", STRING)))
_CORE_SERIES = Struct(
    "v1.EventSeries", (Field("count", INT32), Field("lastObservedTime", MICROTIME))
)
_V1_SERIES = Struct(
    "v1.EventSeries",
    (Field("count", INT32, omitempty=False), Field("lastObservedTime", MICROTIME)),
)

CORE_EVENT = Struct(
    "v1.Event",
    (
        Field("kind", STRING),
        Field("apiVersion", STRING),
        Field("metadata", OBJECT_META),
        Field("involvedObject", OBJECT_REFERENCE),
        Field("reason", STRING),
        Field("message", STRING),
        Field("source", EVENT_SOURCE),
        Field("firstTimestamp", TIME),
        Field("lastTimestamp", TIME),
        Field("count", INT32),
        Field("type", STRING),
        Field("eventTime", MICROTIME),
        Field("series", _CORE_SERIES, pointer=True),
        Field("action", STRING),
        Field("related", OBJECT_REFERENCE, pointer=True),
        Field("reportingComponent", STRING, omitempty=False),
        Field("reportingInstance", STRING, omitempty=False),
    ),
)
EVENTS_V1_EVENT = Struct(
    "v1.Event",
    (
        Field("kind", STRING),
        Field("apiVersion", STRING),
        Field("metadata", OBJECT_META),
        Field("eventTime", MICROTIME, omitempty=False),
        Field("series", _V1_SERIES, pointer=True),
        Field("reportingController", STRING),
        Field("reportingInstance", STRING),
        Field("action", STRING),
        Field("reason", STRING),
        Field("regarding", OBJECT_REFERENCE),
        Field("related", OBJECT_REFERENCE, pointer=True),
        Field("note", STRING),
        Field("type", STRING),
        Field("deprecatedSource", EVENT_SOURCE),
        Field("deprecatedFirstTimestamp", TIME),
        Field("deprecatedLastTimestamp", TIME),
        Field("deprecatedCount", INT32),
    ),
)

_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _json_kind(value: JSON) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def zero_value(typ: Scalar | Struct | ListOf, pointer: bool = False) -> JSON:
    if pointer:
        return None
    if isinstance(typ, Struct):
        return {f.json: zero_value(f.type, f.pointer) for f in typ.fields}
    if isinstance(typ, ListOf):
        return []
    return {
        "string": "",
        "int32": 0,
        "int64": 0,
        "bool": False,
        "time": None,
        "microtime": None,
        "any": None,
        "strmap": {},
        "strlist": [],
    }[typ.kind]


@dataclass
class _Decoder:
    root: str
    unknown: list[str] = field(default_factory=list)

    def type_error(self, value: JSON, path: str, go_type: str) -> DecodeError:
        shown = _json_kind(value)
        if shown == "number" and go_type in ("int32", "int64"):
            shown = "number " + (value.literal if isinstance(value, GoNumber) else str(value))
        where = f"Go struct field {self.root}.{path}" if path else f"Go value of type {self.root}"
        return DecodeError(f"json: cannot unmarshal {shown} into {where} of type {go_type}")

    def scalar(self, value: JSON, typ: Scalar, path: str) -> JSON:
        if value is None:
            return zero_value(typ)
        kind = typ.kind
        if kind == "string":
            if not isinstance(value, str):
                raise self.type_error(value, path, "string")
            return value
        if kind in ("int32", "int64"):
            low, high = _INT_RANGE[kind]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise self.type_error(value, path, kind)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.type_error(value, path, "bool")
            return value
        if kind in ("time", "microtime"):
            if not isinstance(value, str):
                raise DecodeError(
                    f"json: cannot unmarshal {_json_kind(value)} into Go value of type string"
                )
            try:
                return parse_micro_time(value) if kind == "microtime" else parse_time(value)
            except GoTimeError as exc:
                raise DecodeError(str(exc)) from None
        if kind == "strmap":
            if not isinstance(value, dict):
                raise self.type_error(value, path, typ.go_type)
            for key, item in value.items():
                if item is not None and not isinstance(item, str):
                    raise self.type_error(item, f"{path}.{key}", "string")
            return {k: v or "" for k, v in value.items()}
        if kind == "strlist":
            if not isinstance(value, list):
                raise self.type_error(value, path, typ.go_type)
            for item in value:
                if item is not None and not isinstance(item, str):
                    raise self.type_error(item, path, "string")
            return [v or "" for v in value]
        return _plain(value)

    def value(self, value: JSON, typ: Scalar | Struct | ListOf, path: str) -> JSON:
        if isinstance(typ, Struct):
            return self.struct(value, typ, path)
        if isinstance(typ, ListOf):
            if value is None:
                return []
            if not isinstance(value, list):
                raise self.type_error(value, path, typ.go_type)
            return [self.struct(item, typ.item, path) for item in value]
        return self.scalar(value, typ, path)

    def struct(self, value: JSON, typ: Struct, path: str) -> dict[str, JSON]:
        out: dict[str, JSON] = zero_value(typ)
        if value is None:
            return out
        if not isinstance(value, dict):
            raise self.type_error(value, path, typ.go_type)
        known = typ.by_name()
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            spec = known.get(key)
            if spec is None:
                self.unknown.append(child)
                continue
            if item is None and spec.pointer:
                out[key] = None
                continue
            out[key] = self.value(item, spec.type, child)
        return out


def _plain(value: JSON) -> JSON:
    """Free-form JSON (fieldsV1) back to plain Python numbers."""
    if isinstance(value, GoNumber):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def decode_object(document: JSON, schema: Struct) -> tuple[dict[str, JSON], list[str]]:
    """Unmarshal like Go into `schema`: (canonical object, unknown field paths)."""
    decoder = _Decoder(root=schema.go_type.split(".")[-1])
    obj = decoder.struct(document, schema, "")
    return obj, decoder.unknown


def _is_empty(value: JSON) -> bool:
    return value is None or value is False or value == 0 or value == "" or value in ([], {})


def _encode_value(value: JSON, typ: Scalar | Struct | ListOf) -> JSON:
    if value is None:
        return None
    if isinstance(typ, Struct):
        return encode_object(value, typ)
    if isinstance(typ, ListOf):
        return [encode_object(item, typ.item) for item in value]
    if typ.kind == "time":
        return format_time(value)
    if typ.kind == "microtime":
        return format_micro_time(value)
    if typ.kind in ("strmap", "strlist", "any"):
        return _plain(value)
    return value


def encode_object(obj: Mapping[str, JSON], schema: Struct) -> dict[str, JSON]:
    """Marshal like Go: omitempty drops empty scalars and nil pointers, never a struct value
    (which is why a zero metav1.Time comes out as null)."""
    out: dict[str, JSON] = {}
    for spec in schema.fields:
        value = obj.get(spec.json)
        if spec.pointer:
            if value is None and spec.omitempty:
                continue
        else:
            struct_like = isinstance(spec.type, Struct) or (
                isinstance(spec.type, Scalar) and spec.type.kind in ("time", "microtime")
            )
            if spec.omitempty and not struct_like and _is_empty(value):
                continue
        out[spec.json] = _encode_value(value, spec.type)
    return out


# --------------------------------------------------------------------------- version conversion

_V1_RENAMES = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
)
_SHARED = (
    "kind",
    "apiVersion",
    "metadata",
    "eventTime",
    "series",
    "reportingInstance",
    "action",
    "reason",
    "related",
    "type",
)


def core_to_v1(event: Mapping[str, JSON]) -> dict[str, JSON]:
    """`Convert_core_Event_To_v1_Event`: the events.k8s.io/v1 view of a stored Event."""
    out = {key: event[key] for key in _SHARED}
    for core_name, v1_name in _V1_RENAMES:
        out[v1_name] = event[core_name]
    return out


def v1_to_core(event: Mapping[str, JSON]) -> dict[str, JSON]:
    out = {key: event[key] for key in _SHARED}
    for core_name, v1_name in _V1_RENAMES:
        out[core_name] = event[v1_name]
    return out


# --------------------------------------------------------------------------- ObjectMeta rules


def validate_object_meta(
    meta: Mapping[str, JSON], name_rule: str = "path", requires_namespace: bool = True
) -> list[FieldError]:
    """`ValidateObjectMetaAccessor`; name_rule "path" (every object) or "dns" (events/v1)."""

    def check(name: str, prefix: bool) -> list[str]:
        if name_rule == "dns":
            return dns_subdomain_name(name, prefix)
        return path_segment_name(name, prefix)

    errs: list[FieldError] = []
    if meta["generateName"]:
        errs += [
            _invalid("metadata.generateName", meta["generateName"], msg)
            for msg in check(meta["generateName"], True)
        ]
    if not meta["name"]:
        errs.append(_required("metadata.name", "name or generateName is required"))
    else:
        errs += [_invalid("metadata.name", meta["name"], msg) for msg in check(meta["name"], False)]
    if requires_namespace:
        if not meta["namespace"]:
            errs.append(_required("metadata.namespace"))
        else:
            errs += [
                _invalid("metadata.namespace", meta["namespace"], msg)
                for msg in is_dns1123_label(meta["namespace"])
            ]
    if meta["generation"] < 0:
        errs.append(
            _invalid(
                "metadata.generation", meta["generation"], "must be greater than or equal to 0"
            )
        )
    for key, value in sorted(meta["labels"].items()):
        errs += [_invalid("metadata.labels", key, msg) for msg in is_qualified_name(key)]
        errs += [_invalid("metadata.labels", value, msg) for msg in is_label_value(value)]
    annotations = meta["annotations"]
    for key in sorted(annotations):
        errs += [
            _invalid("metadata.annotations", key, msg) for msg in is_qualified_name(key.lower())
        ]
    if sum(_blen(k) + _blen(v) for k, v in annotations.items()) > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(
            FieldError(
                TOO_LONG,
                "metadata.annotations",
                detail=f"may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
            )
        )
    return errs


def validate_object_meta_update(
    new: Mapping[str, JSON], old: Mapping[str, JSON]
) -> list[FieldError]:
    """The immutable parts of ObjectMeta (`ValidateObjectMetaAccessorUpdate`)."""
    errs = []
    for key in ("name", "namespace", "uid"):
        if new[key] != old[key]:
            errs.append(_invalid(f"metadata.{key}", new[key], "field is immutable"))
    return errs


# --------------------------------------------------------------------------- Event rules


def _reference_repr(ref: Mapping[str, JSON] | None) -> GoRepr:
    if ref is None:
        return GoRepr("null")
    go_names = (
        ("Kind", "kind"),
        ("Namespace", "namespace"),
        ("Name", "name"),
        ("UID", "uid"),
        ("APIVersion", "apiVersion"),
        ("ResourceVersion", "resourceVersion"),
        ("FieldPath", "fieldPath"),
    )
    inner = ", ".join(f"{go}:{go_quote(ref[js])}" for go, js in go_names)
    return GoRepr(f"core.ObjectReference{{{inner}}}")


def _source_repr(source: Mapping[str, JSON]) -> GoRepr:
    return GoRepr(
        f"core.EventSource{{Component:{go_quote(source['component'])}, "
        f"Host:{go_quote(source['host'])}}}"
    )


def _legacy_validate(event: Mapping[str, JSON]) -> list[FieldError]:
    errs: list[FieldError] = []
    namespace = event["metadata"]["namespace"]
    involved_ns = event["involvedObject"]["namespace"]
    mismatch = _invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    if event["eventTime"] is None:
        if not involved_ns:
            if namespace not in ("", "default"):
                errs.append(mismatch)
        elif namespace != involved_ns:
            errs.append(mismatch)
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            errs.append(mismatch)
        controller = event["reportingComponent"]
        if not controller:
            errs.append(_required("reportingController"))
        errs += [
            _invalid("reportingController", controller, msg)
            for msg in is_qualified_name(controller)
        ]
        for path, value, limit in (
            ("reportingInstance", event["reportingInstance"], REPORTING_INSTANCE_LENGTH_LIMIT),
            ("action", event["action"], ACTION_LENGTH_LIMIT),
            ("reason", event["reason"], REASON_LENGTH_LIMIT),
        ):
            if not value:
                errs.append(_required(path))
            if _blen(value) > limit:
                errs.append(_invalid(path, "", f"can have at most {limit} characters"))
        if _blen(event["message"]) > NOTE_LENGTH_LIMIT:
            errs.append(_invalid("message", "", f"can have at most {NOTE_LENGTH_LIMIT} characters"))
    errs += [_invalid("namespace", namespace, msg) for msg in is_dns1123_subdomain(namespace)]
    return errs


def _series_errors(event: Mapping[str, JSON]) -> list[FieldError]:
    series = event["series"]
    if series is None:
        return []
    errs = []
    if series["count"] < 2:
        errs.append(_invalid("series.count", "", "should be at least 2"))
    if series["lastObservedTime"] is None:
        errs.append(_required("series.lastObservedTime"))
    return errs


def validate_event_create(event: Mapping[str, JSON], group: str) -> list[FieldError]:
    """`ValidateEventCreate`: legacy rules always, strict ones for events.k8s.io/v1 requests."""
    errs = _legacy_validate(event)
    if group != EVENTS_GROUP:
        return errs
    errs += validate_object_meta(event["metadata"], name_rule="dns")
    errs += _series_errors(event)
    if event["eventTime"] is None:
        errs.append(_required("eventTime"))
    if event["type"] not in ("Normal", "Warning"):
        errs.append(_invalid("type", "", f"has invalid value: {event['type']}"))
    for path in ("firstTimestamp", "lastTimestamp"):
        if event[path] is not None:
            errs.append(_invalid(path, "", "needs to be unset"))
    if event["count"] != 0:
        errs.append(_invalid("count", "", "needs to be unset"))
    if event["source"]["component"] or event["source"]["host"]:
        errs.append(_invalid("source", "", "needs to be unset"))
    return errs


def validate_event_update(
    new: Mapping[str, JSON], old: Mapping[str, JSON], group: str
) -> list[FieldError]:
    """`ValidateEventUpdate`: through events.k8s.io/v1 almost everything is immutable."""
    errs = _legacy_validate(new)
    if group != EVENTS_GROUP:
        return errs
    errs += validate_object_meta_update(new["metadata"], old["metadata"])
    if new["series"] != old["series"]:
        errs += _series_errors(new)

    def immutable(key: str, path: str = "", render: Any = None) -> None:
        if new[key] != old[key]:
            shown = render(new[key]) if render else new[key]
            errs.append(_invalid(path or key, shown, "field is immutable"))

    immutable("involvedObject", render=_reference_repr)
    immutable("reason")
    immutable("message")
    immutable("source", render=_source_repr)
    immutable("firstTimestamp", render=go_time_string)
    immutable("lastTimestamp", render=go_time_string)
    immutable("count")
    immutable("reason")  # checked twice in Go too; the message list drops the duplicate
    immutable("type")
    immutable("eventTime", render=go_time_string)
    immutable("action")
    immutable("related", render=_reference_repr)
    immutable("reportingComponent", "reportingController")
    immutable("reportingInstance")
    return errs

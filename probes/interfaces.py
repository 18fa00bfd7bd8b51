"""The table of interfaces a device should not expose by default (probes/data/interfaces.yaml).

Identification (scanner/discovery/fingerprint.py) reads its request tables; the
``unneeded-interface-exposed`` check reads its interfaces. Names of request builders and
recognisers are checked against the code at load time, so a typo fails loudly, not silently.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from profiles.yamldata import parse_yaml, validate
from scanner.models import Service, Severity
from scanner.protocols import iot_tcp, udp

ID = r"^[a-z0-9]+(-[a-z0-9]+)*$"
Port = int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ports(values: list[Port]) -> list[Port]:
    for value in values:
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is outside 1-65535")
    return values


class UdpRequest(_Strict):
    """A protocol-correct request that identifies a UDP service by its reply."""

    id: str = Field(pattern=ID)
    protocol: str = Field(pattern=ID)
    ports: list[Port] = Field(min_length=1)
    request: str  # a builder in scanner.protocols.udp.REQUESTS
    reply: str  # a recogniser in scanner.protocols.udp.RECOGNISERS
    any_source_port: bool = False  # the reply comes from a new port (TFTP)

    _check_ports = field_validator("ports")(_ports)

    @model_validator(mode="after")
    def _known(self) -> UdpRequest:
        if self.request not in udp.REQUESTS:
            raise ValueError(f"unknown request builder {self.request!r}")
        if self.reply not in udp.RECOGNISERS:
            raise ValueError(f"unknown reply recogniser {self.reply!r}")
        return self


class TcpRequest(_Strict):
    """A safe request that identifies a binary TCP service (scanner.protocols.iot_tcp)."""

    protocol: str = Field(pattern=ID)
    ports: list[Port] = Field(min_length=1)
    recogniser: str

    _check_ports = field_validator("ports")(_ports)

    @field_validator("recogniser")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in iot_tcp.PROTOCOLS:
            raise ValueError(f"unknown TCP recogniser {value!r}")
        return value


class Confirm(_Strict):
    """The fresh exchange that confirms the interface is there when the check runs.

    connect: a TCP connect and nothing else (fragile and industrial ports); banner: a connect
    and a short read of whatever the service says first; tcp-request: the tcp_requests entry of
    the port, replayed; udp: one request of the udp_requests
    table and a recognised reply; http: one GET of ``path`` whose body contains one of
    ``contains`` (lower-case; empty: any reply). ``prompt: shell`` asks the banner to end in a
    command prompt."""

    method: Literal["connect", "banner", "tcp-request", "udp", "http"]
    udp_request: str | None = None
    path: str = Field(default="/", pattern=r"^/[^\s#]*$", max_length=256)
    contains: list[str] = Field(default_factory=list, max_length=8)
    prompt: Literal["shell"] | None = None

    @field_validator("contains")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        if any(value != value.lower() or not value for value in values):
            raise ValueError("markers are non-empty lower-case substrings")
        return values


class Interface(_Strict):
    id: str = Field(pattern=ID, max_length=64)
    name: str = Field(min_length=3, max_length=120)
    transport: Literal["tcp", "udp"]
    ports: list[Port] = Field(default_factory=list)
    protocols: list[str] = Field(default_factory=list)  # identified protocols, on any port
    port_protocols: list[str] = Field(default_factory=lambda: ["unknown"])  # …on its ports
    severity: Severity
    why: str = Field(min_length=20, max_length=600)
    references: list[str] = Field(min_length=1, max_length=8)
    confirm: Confirm

    _check_ports = field_validator("ports")(_ports)

    @model_validator(mode="after")
    def _consistent(self) -> Interface:
        if not (self.ports or self.protocols):
            raise ValueError("give ports, protocols or both")
        if (self.transport == "udp") != (self.confirm.method == "udp"):
            raise ValueError("UDP interfaces, and only they, are confirmed by a UDP request")
        return self

    def matches(self, service: Service) -> bool:
        """Identified as this interface, or found on one of its ports as something it may be."""
        if service.transport != self.transport:
            return False
        if service.protocol in self.protocols:
            return True
        # A service that answered with something we could not recognise spoke another
        # protocol: garbage on 2323 is not Telnet. Silence (or a fragile port) may still be.
        spoke_otherwise = service.protocol == "unknown" and bool(service.banner)
        return service.port in self.ports and service.protocol in self.port_protocols \
            and not spoke_otherwise


class InterfaceTable(_Strict):
    udp_requests: list[UdpRequest]
    tcp_requests: list[TcpRequest]
    interfaces: list[Interface]

    @model_validator(mode="after")
    def _references(self) -> InterfaceTable:
        udp_ids = [request.id for request in self.udp_requests]
        interface_ids = [interface.id for interface in self.interfaces]
        for ids, what in ((udp_ids, "udp request"), (interface_ids, "interface")):
            if len(ids) != len(set(ids)):
                raise ValueError(f"an {what} id is used twice")
        tcp_protocols = {request.protocol for request in self.tcp_requests}
        for interface in self.interfaces:
            if interface.confirm.method == "tcp-request" and \
                    not tcp_protocols & set(interface.protocols):
                raise ValueError(f"{interface.id}: a tcp-request confirmation needs a "
                                 "tcp_requests entry for one of its protocols")
            wanted = interface.confirm.udp_request
            if interface.transport == "udp" and wanted not in udp_ids:
                raise ValueError(f"{interface.id}: udp_request {wanted!r} is not in "
                                 "udp_requests")
        return self

    def udp_request(self, request_id: str) -> UdpRequest:
        return next(request for request in self.udp_requests if request.id == request_id)

    def udp_requests_for(self, port: Port) -> list[UdpRequest]:
        return [request for request in self.udp_requests if port in request.ports]

    def tcp_request(self, interface: Interface) -> TcpRequest:
        """The identification request that confirms a tcp-request interface (checked at load)."""
        return next(request for request in self.tcp_requests
                    if request.protocol in interface.protocols)

    def tcp_request_for(self, port: Port) -> TcpRequest | None:
        return next((request for request in self.tcp_requests if port in request.ports), None)

    def connect_only_ports(self) -> dict[Port, str]:
        """TCP ports that get no payload at all, and the protocol the port number suggests."""
        return {port: (interface.protocols or [interface.id])[0]
                for interface in self.interfaces
                if interface.transport == "tcp" and interface.confirm.method == "connect"
                for port in interface.ports}

    def shell_ports(self) -> frozenset[Port]:
        return frozenset(port for interface in self.interfaces
                         if interface.confirm.prompt == "shell" for port in interface.ports)

    def matching(self, service: Service) -> list[Interface]:
        return [interface for interface in self.interfaces if interface.matches(service)]


def load_table(text: str, where: str) -> InterfaceTable:
    return validate(InterfaceTable, parse_yaml(text, where), text, where)


@cache
def interface_table() -> InterfaceTable:
    """The shipped table (loaded once)."""
    resource = files("probes").joinpath("data", "interfaces.yaml")
    return load_table(resource.read_text("utf-8"), "probes/data/interfaces.yaml")

"""A stand-in for public DNS: a tiny real DNS server on 127.0.0.1 (UDP, a free port),
built on dnspython's message API, answering TXT queries from `records`. Names in
`failing` answer SERVFAIL (a DNS outage); any other name is NXDOMAIN."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset


@dataclass
class FakeDns:
    records: dict[str, list[str]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    queries: list[str] = field(default_factory=list)
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> FakeDns:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def address(self) -> str:
        assert self._sock is not None
        host, port = self._sock.getsockname()
        return f"{host}:{port}"

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self._sock.sendto(self._answer(data), peer)
        self._sock.close()

    def _answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        self.queries.append(name)
        if name in self.failing:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            rdatas = [
                dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()])
                for value in self.records[name]
            ]
            response.answer.append(dns.rrset.from_rdata_list(question.name, 60, rdatas))
        return response.to_wire()

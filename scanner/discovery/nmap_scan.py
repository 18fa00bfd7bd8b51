"""Optional nmap service detection through python-nmap, for ports we found open ourselves.

nmap runs as a subprocess against one in-scope address and only the already-open ports, with its
parallelism held to the per-host limit; the scan works the same without nmap installed.
"""

from __future__ import annotations

from typing import Any

from scanner.net import Network


def _run_nmap(address: str, ports: list[int], parallelism: int, timeout: float) -> dict[str, Any]:
    import nmap  # python-nmap; imported here so a missing nmap binary costs nothing elsewhere

    scanner = nmap.PortScanner()
    arguments = (f"-sT -sV -Pn -n --version-light --max-parallelism {parallelism} "
                 f"--max-retries 1 --host-timeout {int(timeout)}s")
    result: dict[str, Any] = scanner.scan(hosts=address, ports=",".join(map(str, ports)),
                                          arguments=arguments, timeout=int(timeout) + 30)
    return result


async def nmap_services(network: Network, address: str, ports: list[int],
                        timeout: float = 120.0) -> dict[int, dict[str, str]]:
    """port -> {name, product, version} as nmap's service detection saw them."""
    for port in ports:
        network.check_scope(address, port)
    result = await network.run_blocking(_run_nmap, address, ports, network.limits.per_host,
                                        timeout)
    host = result.get("scan", {}).get(address, {})
    found: dict[int, dict[str, str]] = {}
    for port, info in host.get("tcp", {}).items():
        if info.get("state") == "open":
            found[int(port)] = {key: str(info.get(key, ""))[:128]
                                for key in ("name", "product", "version")}
    return found

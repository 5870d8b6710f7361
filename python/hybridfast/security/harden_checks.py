"""The checks of `hybridfast harden`, one function each: `check(probe) -> Result`.

Each reads only through its `Probe` (see `security.harden`) and says what it read.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import stat
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib.metadata import distributions
from pathlib import Path

from hybridfast.security.harden import Probe, Result, Status
from hybridfast.security.keyscan import scan_files, scan_text


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- mandatory access control ------------------------------------------------------------


def check_mac(probe: Probe) -> Result:
    title = "Mandatory access control (SELinux / AppArmor)"
    enforce = probe.read("/sys/fs/selinux/enforce")
    if enforce is not None:
        mode = enforce.strip()
        evidence = [f"/sys/fs/selinux/enforce = {mode}"]
        if mode == "1":
            return Result("mac", title, "pass", "SELinux is enforcing", evidence)
        return Result(
            "mac", title, "warn", "SELinux is permissive: denials are only logged", evidence
        )
    enabled = probe.read("/sys/module/apparmor/parameters/enabled")
    if enabled is not None:
        evidence = [f"/sys/module/apparmor/parameters/enabled = {enabled.strip()}"]
        if enabled.strip() != "Y":
            return Result("mac", title, "warn", "AppArmor is built in but disabled", evidence)
        profiles = probe.read("/sys/kernel/security/apparmor/profiles")
        if profiles is None:
            evidence.append("/sys/kernel/security/apparmor/profiles: unreadable (needs root)")
            return Result("mac", title, "pass", "AppArmor is enabled", evidence)
        enforcing = sum(1 for line in profiles.splitlines() if line.endswith("(enforce)"))
        evidence.append(f"{enforcing} profiles in enforce mode")
        status: Status = "pass" if enforcing else "warn"
        return Result("mac", title, status, f"AppArmor enabled, {enforcing} enforcing", evidence)
    if not probe.path("/sys").exists():
        return Result("mac", title, "unknown", "no /sys to read", ["/sys: absent"])
    evidence = ["/sys/fs/selinux/enforce: absent", "/sys/module/apparmor: absent"]
    return Result("mac", title, "warn", "no SELinux or AppArmor is active", evidence)


# --- firewall and exposure ---------------------------------------------------------------


def _firewall_rules(probe: Probe) -> tuple[str, str] | None:
    """(tool, rules) of the first firewall tool that answered with rules."""
    for tool, cmd in (
        ("nftables", ["nft", "list", "ruleset"]),
        ("iptables", ["iptables", "-S", "INPUT"]),
        ("ufw", ["ufw", "status", "verbose"]),
    ):
        answer = probe.run(cmd)
        if answer is not None and answer[0] == 0 and answer[1].strip():
            return tool, answer[1]
    return None


def _default_deny(tool: str, rules: str) -> bool:
    if tool == "nftables":
        return bool(re.search(r"hook input[^;]*;\s*policy (drop|reject)", rules))
    if tool == "iptables":
        return bool(re.search(r"^-P INPUT (DROP|REJECT)", rules, re.MULTILINE))
    return "Status: active" in rules and bool(
        re.search(r"Default: (deny|reject) \(incoming\)", rules)
    )


def _allows_port(tool: str, rules: str, port: int) -> bool:
    if tool == "nftables":
        return bool(re.search(rf"dport {port}\b[^\n]*accept", rules))
    if tool == "iptables":
        return bool(re.search(rf"--dport {port}\b[^\n]*-j ACCEPT", rules))
    return bool(re.search(rf"^{port}(/tcp)?\s+ALLOW", rules, re.MULTILINE))


def check_firewall(probe: Probe) -> Result:
    title = "Firewall vs the bind address"
    host, port = probe.config.server.host, probe.config.server.port
    bind = f"bind {host}:{port}"
    if _loopback(host):
        return Result(
            "firewall", title, "pass", "bound to loopback: not reachable from the network", [bind]
        )
    found = _firewall_rules(probe)
    if found is None:
        evidence = [bind, "nft, iptables and ufw gave no rules (not installed, or not root)"]
        return Result("firewall", title, "unknown", "cannot read the firewall rules", evidence)
    tool, rules = found
    deny = _default_deny(tool, rules)
    allowed = _allows_port(tool, rules, port)
    evidence = [
        bind,
        f"{tool}: incoming default {'deny' if deny else 'accept'}",
        f"{tool}: port {port} {'explicitly allowed' if allowed else 'not named'}",
    ]
    if not deny:
        return Result("firewall", title, "warn", f"port {port} is open to every network", evidence)
    if allowed:
        return Result(
            "firewall", title, "pass", f"default deny; port {port} allowed on purpose", evidence
        )
    return Result(
        "firewall",
        title,
        "warn",
        f"default deny blocks port {port}: clients cannot connect",
        evidence,
    )


def _cert_expiry(path: str) -> tuple[Status, str]:
    try:
        from cryptography import x509
    except ImportError:
        return "unknown", f"{path}: the cryptography package is needed to read it"
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        return "fail", f"{path}: unreadable certificate ({exc})"
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    when = f"{path}: expires {cert.not_valid_after_utc:%Y-%m-%d} ({left.days} days)"
    if left.total_seconds() <= 0:
        return "fail", when
    return ("warn" if left.days < 14 else "pass"), when


def check_exposure(probe: Probe) -> Result:
    title = "TLS and bind exposure"
    server, tls = probe.config.server, probe.config.tls
    evidence = [
        f"bind {server.host}:{server.port}",
        f"master key {'set' if server.master_key else 'not set'}",
    ]
    if tls.cert:
        status, line = _cert_expiry(tls.cert)
        evidence.append(line)
        summary = {
            "pass": "HTTPS with a valid certificate",
            "warn": "the certificate expires within 14 days",
        }
        return Result(
            "exposure",
            title,
            status,
            summary.get(status, "the TLS certificate is not usable"),
            evidence,
        )
    evidence.append("TLS: off")
    if _loopback(server.host):
        return Result("exposure", title, "pass", "plain HTTP on loopback only", evidence)
    if not server.master_key:
        return Result(
            "exposure", title, "fail", "reachable from the network without a master key", evidence
        )
    return Result(
        "exposure", title, "warn",
        "plain HTTP on the network: keys cross it in clear text unless a TLS proxy fronts it",
        evidence,
    )  # fmt: skip


# --- file permissions ----------------------------------------------------------------------


def _sensitive_files(probe: Probe) -> list[Path]:
    config = probe.config
    files: list[Path] = []
    if probe.config_path is not None:
        files.append(probe.config_path)
    if config.ledger.backend == "sqlite":
        ledger = Path(config.ledger.path)
        files += [ledger, Path(f"{ledger}-wal"), Path(f"{ledger}-shm")]
    snapshot = config.cache.snapshot_path
    if snapshot and snapshot != "auto":
        files += sorted(Path(snapshot).parent.glob(Path(snapshot).name + "*"))
    elif snapshot == "auto" and config.ledger.backend == "sqlite":
        ledger = Path(config.ledger.path)
        files += sorted(ledger.parent.glob(f"{ledger.stem}-cache*"))
    files += probe.env_files
    if config.tls.key:
        files.append(Path(config.tls.key))
    return files


def check_permissions(probe: Probe) -> Result:
    title = "File permissions (config, ledger, snapshots, .env, TLS key)"
    evidence: list[str] = []
    worst: Status = "pass"
    seen = 0
    for path in _sensitive_files(probe):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            evidence.append(f"{path}: cannot stat ({exc.strerror})")
            worst = "unknown" if worst == "pass" else worst
            continue
        seen += 1
        if mode & 0o007:
            verdict, worst = "readable by every user: fail", "fail"
        elif mode & 0o070:
            verdict = "readable by the group: warn"
            worst = "warn" if worst in ("pass", "unknown") else worst
        else:
            verdict = "owner only"
        evidence.append(f"{path}: {mode:04o} ({verdict})")
    if not seen:
        return Result(
            "permissions",
            title,
            "pass" if not evidence else "unknown",
            "no such files yet",
            evidence or ["none of the files exist"],
        )
    summary = {
        "pass": "every file is 0600 or stricter",
        "warn": "some files are readable by their group",
        "fail": "some files are readable by every user (chmod 600 them)",
        "unknown": "some files could not be checked",
    }[worst]
    return Result("permissions", title, worst, summary, evidence)


# --- API keys in files ---------------------------------------------------------------------------


def check_key_scan(probe: Probe) -> Result:
    title = "API keys left in files"
    paths = list(probe.scan_paths) or [Path.cwd()]
    if probe.scan_history:
        paths += [
            probe.home / ".bash_history",
            probe.home / ".zsh_history",
            probe.home / ".python_history",
        ]
    count, found = scan_files(paths)
    evidence = [f"scanned {count} files under {', '.join(str(p) for p in paths)}"]
    if probe.scan_git:
        for path in probe.scan_paths or [Path.cwd()]:
            answer = probe.run(["git", "-C", str(path), "log", "-p", "--all", "--no-color"])
            if answer is None or answer[0] != 0:
                evidence.append(f"{path}: git history not readable")
                continue
            found += scan_text(answer[1], f"git history of {path}")
    evidence += [f.line() for f in found[:50]]
    if len(found) > 50:
        evidence.append(f"... and {len(found) - 50} more")
    if found:
        return Result("key_scan", title, "fail", f"{len(found)} key-like strings found", evidence)
    return Result("key_scan", title, "pass", "no key-like strings found", evidence)


# --- dependencies ----------------------------------------------------------------------------


def installed_packages() -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            seen[name.lower()] = dist.version
    return sorted(seen.items())


def query_osv(url: str, packages: list[tuple[str, str]], timeout: float = 15.0) -> list[list[str]]:
    """Vulnerability ids per package, in order (OSV's /v1/querybatch)."""
    body = {
        "queries": [
            {"package": {"name": name, "ecosystem": "PyPI"}, "version": version}
            for name, version in packages
        ]
    }
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        results = json.loads(response.read())["results"]
    return [[v["id"] for v in (r.get("vulns") or [])] for r in results]


def check_dependencies(
    probe: Probe, packages: Callable[[], list[tuple[str, str]]] = installed_packages
) -> Result:
    title = "Known vulnerabilities in installed packages (OSV)"
    installed = packages()
    if probe.osv_url is None:
        return Result(
            "dependencies",
            title,
            "unknown",
            "not checked (offline)",
            [f"{len(installed)} packages installed; run without --offline to query OSV"],
        )
    try:
        vulns = query_osv(probe.osv_url, installed)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", exc)
        return Result(
            "dependencies",
            title,
            "unknown",
            "the OSV database could not be reached",
            [f"{probe.osv_url}: {reason}", f"{len(installed)} packages not checked"],
        )
    hits = [
        f"{name} {version}: {', '.join(ids)}"
        for (name, version), ids in zip(installed, vulns, strict=False)
        if ids
    ]
    evidence = [f"{len(installed)} packages checked against {probe.osv_url}", *hits]
    if hits:
        return Result(
            "dependencies",
            title,
            "fail",
            f"{len(hits)} packages with known vulnerabilities",
            evidence,
        )
    return Result("dependencies", title, "pass", "no known vulnerabilities", evidence)

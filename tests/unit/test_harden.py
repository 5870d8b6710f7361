"""`hybridfast harden`: golden tests of every check over a fake /sys tree, fake command
outputs, a fake NVML and a local fake OSV server; then the real command on this machine
(every check has a status and evidence; exit 1 exactly when one fails)."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hybridfast.cli import main
from hybridfast.cli.harden import CHECKS
from hybridfast.config import Config, parse_config
from hybridfast.security import harden_checks as C
from hybridfast.security import harden_hw as H
from hybridfast.security.harden import STATUSES, Probe, Result
from tests.fakes.background import BackgroundLoop
from tests.fakes.nvml import FakeGpu, FakeNvml
from tests.fakes.server import free_port

NFT_DENY = """table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tct state established,related accept
\t\ttcp dport 8443 accept
\t}
}
"""
IPTABLES_OPEN = "-P INPUT ACCEPT\n-A INPUT -i lo -j ACCEPT\n"
UFW_DENY = (
    "Status: active\nDefault: deny (incoming), allow (outgoing), disabled (routed)\n\n"
    "To Action From\n22/tcp ALLOW IN Anywhere\n"
)
DMIDECODE = """# dmidecode 3.4
Handle 0x1000, DMI type 16, 23 bytes
Physical Memory Array
\tError Correction Type: Multi-bit ECC
Handle 0x1100, DMI type 17, 92 bytes
Memory Device
\tType: DDR5
"""


def runner(outputs: dict[str, tuple[int, str]]) -> Any:
    def run(cmd: Sequence[str]) -> tuple[int, str] | None:
        return outputs.get(" ".join(cmd))

    return run


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def probe(tmp_path: Path, config: str = "", **kw: Any) -> Probe:
    root = tmp_path / "root"
    root.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, Any] = {"root": root, "run": runner({}), "nvml": lambda: None}
    return Probe(config=parse_config(config).config, **{**defaults, **kw})


def check(result: Result) -> tuple[str, str, list[str]]:
    return result.status, result.summary, result.evidence


# --- mandatory access control ---------------------------------------------------------------------


def test_mac(tmp_path: Path) -> None:
    p = probe(tmp_path)
    write(p.root, "/sys/kernel/x", "")
    assert check(C.check_mac(p)) == (
        "warn",
        "no SELinux or AppArmor is active",
        ["/sys/fs/selinux/enforce: absent", "/sys/module/apparmor: absent"],
    )
    write(p.root, "/sys/module/apparmor/parameters/enabled", "Y\n")
    write(p.root, "/sys/kernel/security/apparmor/profiles", "/usr/bin/a (enforce)\nb (complain)\n")
    assert check(C.check_mac(p)) == (
        "pass",
        "AppArmor enabled, 1 enforcing",
        ["/sys/module/apparmor/parameters/enabled = Y", "1 profiles in enforce mode"],
    )
    write(p.root, "/sys/fs/selinux/enforce", "0\n")
    assert C.check_mac(p).status == "warn"
    write(p.root, "/sys/fs/selinux/enforce", "1\n")
    assert check(C.check_mac(p)) == (
        "pass",
        "SELinux is enforcing",
        ["/sys/fs/selinux/enforce = 1"],
    )
    assert C.check_mac(probe(tmp_path / "none")).status == "unknown"


# --- firewall and exposure ------------------------------------------------------------------------

EXPOSED = "server: {host: 0.0.0.0, port: 8443, master_key: sk-test-master-0000}\n"


def test_firewall(tmp_path: Path) -> None:
    assert check(C.check_firewall(probe(tmp_path))) == (
        "pass",
        "bound to loopback: not reachable from the network",
        ["bind 127.0.0.1:8080"],
    )
    assert check(C.check_firewall(probe(tmp_path, EXPOSED))) == (
        "unknown",
        "cannot read the firewall rules",
        ["bind 0.0.0.0:8443", "nft, iptables and ufw gave no rules (not installed, or not root)"],
    )
    nft = probe(tmp_path, EXPOSED, run=runner({"nft list ruleset": (0, NFT_DENY)}))
    assert check(C.check_firewall(nft)) == (
        "pass",
        "default deny; port 8443 allowed on purpose",
        [
            "bind 0.0.0.0:8443",
            "nftables: incoming default deny",
            "nftables: port 8443 explicitly allowed",
        ],
    )
    ipt = probe(
        tmp_path,
        EXPOSED,
        run=runner(
            {
                "nft list ruleset": (1, "Operation not permitted"),
                "iptables -S INPUT": (0, IPTABLES_OPEN),
            }
        ),
    )
    assert check(C.check_firewall(ipt))[:2] == ("warn", "port 8443 is open to every network")
    ufw = probe(tmp_path, EXPOSED, run=runner({"ufw status verbose": (0, UFW_DENY)}))
    assert check(C.check_firewall(ufw))[:2] == (
        "warn",
        "default deny blocks port 8443: clients cannot connect",
    )


def make_cert(tmp_path: Path, days: int) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_exposure(tmp_path: Path) -> None:
    assert C.check_exposure(probe(tmp_path)).status == "pass"
    assert check(C.check_exposure(probe(tmp_path, "server: {host: 0.0.0.0}\n")))[:2] == (
        "fail",
        "reachable from the network without a master key",
    )
    assert C.check_exposure(probe(tmp_path, EXPOSED)).status == "warn"
    cert, key = make_cert(tmp_path, days=5)
    tls = EXPOSED + f"tls: {{cert: '{cert}', key: '{key}'}}\n"
    status, summary, evidence = check(C.check_exposure(probe(tmp_path, tls)))
    assert (status, summary) == ("warn", "the certificate expires within 14 days")
    assert evidence[-1].startswith(f"{cert}: expires ")
    cert, key = make_cert(tmp_path, days=90)
    tls = EXPOSED + f"tls: {{cert: '{cert}', key: '{key}'}}\n"
    assert C.check_exposure(probe(tmp_path, tls)).summary == "HTTPS with a valid certificate"


# --- permissions ----------------------------------------------------------------------------------


def test_permissions(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    config_file = tmp_path / "hybridfast.yaml"
    env = tmp_path / ".env"
    for path, mode in ((ledger, 0o644), (config_file, 0o600), (env, 0o640)):
        path.write_text("x")
        path.chmod(mode)
    p = probe(
        tmp_path,
        f"ledger: {{path: '{ledger}'}}\ncache: {{snapshot_path: null}}\n",
        config_path=config_file,
        env_files=[env],
    )
    assert check(C.check_permissions(p)) == (
        "fail",
        "some files are readable by every user (chmod 600 them)",
        [
            f"{config_file}: 0600 (owner only)",
            f"{ledger}: 0644 (readable by every user: fail)",
            f"{env}: 0640 (readable by the group: warn)",
        ],
    )
    ledger.chmod(0o600)
    assert C.check_permissions(p).status == "warn"
    env.chmod(0o600)
    assert C.check_permissions(p).status == "pass"


# --- key scan -------------------------------------------------------------------------------------


def test_key_scan_finds_keys_without_showing_them(tmp_path: Path) -> None:
    tree = tmp_path / "project"
    (tree / "node_modules").mkdir(parents=True)
    openai_key = "sk-proj-" + secrets.token_urlsafe(36)
    password = secrets.token_urlsafe(24)
    (tree / ".env").write_text(f"OPENAI_API_KEY={openai_key}\nDEBUG=true\n")
    (tree / "settings.py").write_text(
        f"db_password = '{password}'\napi_key = '${{OPENAI_API_KEY}}'\nname = 'x' * 40\n"
    )
    (tree / "README.md").write_text(
        "Set OPENAI_API_KEY to your key; the token_limit is 4000000000000000000000.\n"
    )
    (tree / "node_modules" / "dep.js").write_text(f"const k = '{openai_key}'")
    result = C.check_key_scan(probe(tmp_path, scan_paths=[tree]))
    assert (result.status, result.summary) == ("fail", "2 key-like strings found")
    assert result.evidence == [
        f"scanned 3 files under {tree}",
        f"{tree / '.env'}:1: known key prefix sk-pro… ({len(openai_key)} chars)",
        f"{tree / 'settings.py'}:1: high-entropy db_password "
        f"{password[:2]}… ({len(password)} chars)",
    ]
    assert openai_key not in str(result.as_json())
    assert password not in str(result.as_json())
    (tree / ".env").unlink()
    (tree / "settings.py").unlink()
    assert C.check_key_scan(probe(tmp_path, scan_paths=[tree])).status == "pass"


def test_key_scan_of_git_history(tmp_path: Path) -> None:
    leaked = "AKIA" + "ABCDEFGHIJKLMNOP"
    log = f"commit 1\n-AWS_KEY={leaked}\n+AWS_KEY=${{AWS_KEY}}\n"
    p = probe(
        tmp_path,
        scan_paths=[tmp_path / "empty"],
        scan_git=True,
        run=runner({f"git -C {tmp_path / 'empty'} log -p --all --no-color": (0, log)}),
    )
    result = C.check_key_scan(p)
    assert result.status == "fail"
    assert (
        result.evidence[-1]
        == f"git history of {tmp_path / 'empty'}:2: known key prefix AKIAAB… (20 chars)"
    )


# --- dependencies against a fake OSV --------------------------------------------------------------


@pytest.fixture
def fake_osv() -> Iterator[tuple[str, list[Any]]]:
    seen: list[Any] = []

    async def querybatch(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        results = [
            {"vulns": [{"id": "GHSA-aaaa-bbbb-cccc", "modified": "2024-01-01T00:00:00Z"}]}
            if q["package"]["name"] == "jinja2" and q["version"] == "2.4"
            else {}
            for q in body["queries"]
        ]
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_post("/v1/querybatch", querybatch)
    loop = BackgroundLoop()
    port = free_port()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run(start())
    yield f"http://127.0.0.1:{port}/v1/querybatch", seen
    loop.run(runner.cleanup())
    loop.close()


def test_dependencies(tmp_path: Path, fake_osv: tuple[str, list[Any]]) -> None:
    url, seen = fake_osv
    packages = [("jinja2", "2.4"), ("numpy", "2.4.6")]
    result = C.check_dependencies(probe(tmp_path, osv_url=url), lambda: packages)
    assert check(result) == (
        "fail",
        "1 packages with known vulnerabilities",
        [f"2 packages checked against {url}", "jinja2 2.4: GHSA-aaaa-bbbb-cccc"],
    )
    assert seen[0]["queries"][1] == {
        "package": {"name": "numpy", "ecosystem": "PyPI"},
        "version": "2.4.6",
    }
    clean = C.check_dependencies(probe(tmp_path, osv_url=url), lambda: packages[1:])
    assert clean.status == "pass"
    offline = C.check_dependencies(probe(tmp_path, osv_url=None), lambda: packages)
    assert (offline.status, offline.summary) == ("unknown", "not checked (offline)")
    closed = f"http://127.0.0.1:{free_port()}/v1/querybatch"
    unreachable = C.check_dependencies(probe(tmp_path, osv_url=closed), lambda: packages)
    assert (unreachable.status, unreachable.summary) == (
        "unknown",
        "the OSV database could not be reached",
    )


# --- hardware -------------------------------------------------------------------------------------


class EccNvml(FakeNvml):
    """The fake NVML with ECC modes (None: not supported by the GPU)."""

    def __init__(self, gpus: list[FakeGpu], modes: list[int | None]) -> None:
        super().__init__(gpus)
        self.modes = modes

    def nvmlDeviceGetEccMode(self, handle: int) -> tuple[int, int]:
        mode = self.modes[handle]
        if mode is None:
            raise self.NVMLError("Not Supported")
        return mode, mode


def test_gpu_ecc(tmp_path: Path) -> None:
    assert check(H.check_gpu_ecc(probe(tmp_path)))[:2] == ("unknown", "NVML is not available")
    nvml = EccNvml([FakeGpu(), FakeGpu(name="NVIDIA L4")], [1, 1])
    assert check(H.check_gpu_ecc(probe(tmp_path, nvml=lambda: nvml))) == (
        "pass",
        "ECC on and clean on 2 GPUs",
        [
            "GPU 0 NVIDIA H200: ECC on, uncorrected errors since boot: 0",
            "GPU 1 NVIDIA L4: ECC on, uncorrected errors since boot: 0",
        ],
    )
    nvml = EccNvml([FakeGpu(), FakeGpu(name="RTX 4090", ecc_uncorrected=None)], [0, None])
    result = H.check_gpu_ecc(probe(tmp_path, nvml=lambda: nvml))
    assert result.status == "warn"
    assert (
        result.evidence[1]
        == "GPU 1 RTX 4090: ECC not supported, uncorrected errors since boot: not readable"
    )
    nvml = EccNvml([FakeGpu(ecc_uncorrected=3), FakeGpu(lost=True)], [1, 1])
    result = H.check_gpu_ecc(probe(tmp_path, nvml=lambda: nvml))
    assert result.status == "fail"
    assert result.evidence[0].endswith("uncorrected errors since boot: 3")
    assert result.evidence[1].startswith("GPU 1: NVML cannot reach it")
    assert H.check_gpu_ecc(probe(tmp_path, nvml=lambda: EccNvml([], []))).status == "pass"


def test_memory_ecc_and_rowhammer(tmp_path: Path) -> None:
    p = probe(tmp_path)
    assert check(H.check_memory_ecc(p))[:2] == ("unknown", "ECC state not exposed to this user")
    assert H.check_rowhammer(p).status == "unknown"
    p.run = runner({"dmidecode -t memory": (0, DMIDECODE.replace("Multi-bit ECC", "None"))})
    assert H.check_memory_ecc(p).status == "warn"
    assert check(H.check_rowhammer(p)) == (
        "warn",
        "no ECC to catch flipped bits; TRR cannot be verified",
        [
            "TRR/RFM state lives in the DRAM and its controller; no interface shows it to software",
            "memory types (DMI): DDR5",
            "ECC: None",
        ],
    )
    p.run = runner({"dmidecode -t memory": (0, DMIDECODE)})
    mc = "/sys/devices/system/edac/mc/mc0"
    for name, value in (("ce_count", "0"), ("ue_count", "0"), ("dimm0/dimm_edac_mode", "SECDED")):
        write(p.root, f"{mc}/{name}", value + "\n")
    assert check(H.check_memory_ecc(p)) == (
        "pass",
        "ECC active, no errors",
        [
            "EDAC mc0: corrected 0, uncorrected 0, mode SECDED",
            "DMI: error correction Multi-bit ECC, memory DDR5",
        ],
    )
    assert H.check_rowhammer(p).status == "unknown"  # ECC or not, TRR is not readable
    write(p.root, f"{mc}/ce_count", "7\n")
    assert H.check_memory_ecc(p).status == "warn"
    write(p.root, f"{mc}/ue_count", "1\n")
    assert H.check_memory_ecc(p).status == "fail"


# --- the command on this machine ------------------------------------------------------------------


def test_harden_json_on_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hybridfast.yaml").write_text("ledger: {backend: memory}\n")
    os.chmod(tmp_path / "hybridfast.yaml", 0o600)
    code = main(
        ["harden", "--json", "--offline", "--config", "hybridfast.yaml", "--scan", str(tmp_path)]
    )
    report = json.loads(capsys.readouterr().out)
    ids = [c["id"] for c in report["checks"]]
    assert ids == [
        "mac",
        "firewall",
        "exposure",
        "permissions",
        "key_scan",
        "dependencies",
        "gpu_ecc",
        "memory_ecc",
        "rowhammer",
    ]
    assert len(ids) == len(CHECKS)
    for c in report["checks"]:
        assert c["status"] in STATUSES
        assert c["evidence"], c["id"]
        assert c["summary"]
    by_id = {c["id"]: c for c in report["checks"]}
    assert by_id["dependencies"]["status"] == "unknown"  # offline: never a pass
    assert by_id["rowhammer"]["status"] in ("unknown", "warn")
    assert code == (1 if report["summary"]["fail"] else 0)
    code = main(["harden", "--offline", "--config", "hybridfast.yaml", "--scan", str(tmp_path)])
    text = capsys.readouterr().out
    assert "[????] Rowhammer mitigations" in text or "[WARN] Rowhammer mitigations" in text


def test_config_of_the_probe_is_typed() -> None:
    assert isinstance(Probe(config=Config()).config, Config)

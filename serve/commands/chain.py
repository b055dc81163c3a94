"""`zkserve verifier | register | verify | attestation`: the verifier service and the chain."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import typer

from circuits import CircuitPackage, PackageError, Proof
from serve.chain.keys import SigningKeyError
from serve.chain.registry import InsecureSrsRefused, Registry, to_bytes32
from serve.chain.rpc import ChainError
from serve.commands.progress import console
from serve.config import ConfigError, load_config
from serve.merkle import instances_hash

CONFIG_OPTION = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config file")


def _config(path: Path | None) -> dict:
    try:
        return load_config(path)["zkserve"]
    except ConfigError as error:
        console.print(f"[red]config:[/red] {error}")
        raise typer.Exit(2) from None


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _package(ref: str, state_dir: str) -> CircuitPackage:
    """A package directory, a model id or name from the state directory, or a demo name."""
    from circuits.demo import DEMO_NAMES, ensure_demo_packages
    from serve.verifier.models import AmbiguousModel, ModelCatalog, UnknownModel

    if Path(ref).is_dir():
        return CircuitPackage.load(ref)
    try:
        return ModelCatalog(Path(state_dir)).resolve(ref)
    except UnknownModel:
        if ref in DEMO_NAMES:
            return ensure_demo_packages([ref])[ref]
        raise
    except AmbiguousModel:
        if ref in DEMO_NAMES:  # the default demo package wins over variants compiled with other options
            return ensure_demo_packages([ref])[ref]
        raise


def _chain(zk: dict):
    from serve.chain.connect import connect

    try:
        connection = connect(zk)
        return connection, Registry.ensure(connection.client, Path(zk["state_dir"]))
    except (ChainError, SigningKeyError) as error:
        _fail(str(error))


def verifier_command(
    config: Path | None = CONFIG_OPTION,
    package: list[Path] = typer.Option(
        [],
        "--package",
        exists=True,
        file_okay=False,
        help="circuit package directory (repeatable; the state directory's packages are found too)",
    ),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="allow binding beyond loopback with verifier.auth_enabled false"
    ),
) -> None:
    """Run the verifier gRPC service (zkserve.v1.Verifier) with its chain sender."""
    from serve.lifecycle import check_ports_free
    from serve.security import InsecureBind, KeyStoreError, install_log_redaction
    from serve.security.tls import TlsConfigError
    from serve.settings import load_settings
    from serve.stack import verifier_port_claims
    from serve.verifier.server import run_verifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    try:
        settings = load_settings(config)
        settings.export()  # packages compiled for this state directory are the ones it knows
        check_ports_free(verifier_port_claims(settings))  # fail fast; never adopt someone else's service
        run_verifier(settings.document(), package, insecure_no_auth)
    except (ChainError, SigningKeyError, ConfigError, OSError, InsecureBind, KeyStoreError, TlsConfigError) as error:
        _fail(str(error))


def register_command(
    model: str = typer.Argument(..., help="circuit package directory, model id, package name or demo name"),
    metadata_uri: str | None = typer.Option(None, help="stored with the model in the registry"),
    allow_insecure_srs: bool = typer.Option(
        False, "--allow-insecure-srs", help="register an INSECURE-SRS package on a chain other than the local anvil"
    ),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Deploy the model's EZKL verifier and bind it to its model id in the registry (once)."""
    zk = _config(config)
    try:
        package = _package(model, zk["state_dir"])
    except (LookupError, PackageError) as error:
        _fail(str(error))
    connection, registry = _chain(zk)
    try:
        # "local" is the anvil zkserve starts (no chain.rpc_url), never an endpoint configured by URL
        result = registry.register_model(
            package, Path(zk["state_dir"]), metadata_uri, allow_insecure_srs, local_chain=not zk["chain"].get("rpc_url")
        )
    except (ChainError, InsecureSrsRefused) as error:
        _fail(str(error))
    finally:
        connection.close()
    state = "already registered" if result["already_registered"] else "registered"
    console.print(f"{package.name} {state}: model_id {package.model_id}")
    console.print(f"  verifier {result['verifier']}  registry {registry.address}  chain {registry.chain.chain_id()}")
    if package.insecure:
        console.print("[yellow]warning:[/yellow] this package uses a locally generated (INSECURE) SRS")


def verify_command(
    proof_file: Path = typer.Argument(
        ..., exists=True, help="proof JSON (circuits.Proof), or a `zkserve score` job directory"
    ),
    model: str | None = typer.Option(None, "--model", help="model id, package name or package directory"),
    onchain: bool = typer.Option(
        False, "--onchain", help="also run the registered Solidity verifier (eth_call, no tx)"
    ),
    input: Path | None = typer.Option(None, "--input", help="a scoring job's input file (required with a job DIR)"),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Verify a proof off chain with the verification key, and optionally with the on-chain verifier;
    or check a finished scoring job: every proof verifies and every row's outputs match its proof."""
    from serve.verifier.models import check_proof

    if proof_file.is_dir():
        _verify_job(proof_file, model, input, config)
    if model is None:
        _fail("--model is required to verify a proof file")
    zk = _config(config)
    try:
        package = _package(model, zk["state_dir"])
        proof = Proof.load(proof_file)
    except (LookupError, PackageError, ValueError) as error:
        _fail(str(error))
    verdict = check_proof(package, proof)
    console.print(f"off chain: {'VALID' if verdict.valid else 'INVALID'}  {verdict.reason}")
    console.print(f"  proof_hash {proof.proof_hash}  instances_hash 0x{instances_hash(proof.instances).hex()}")
    valid = verdict.valid
    if onchain:
        connection, registry = _chain(zk)
        try:
            if not registry.is_registered(package.model_id):
                _fail(f"{package.name} is not registered; run `zkserve register {package.name}`")
            verifier = registry.chain.contract(
                registry.model(package.model_id)["verifier"], package.verifier_artifact()["abi"]
            )
            try:
                on_chain = bool(verifier.functions.verifyProof(proof.proof_bytes, proof.instances).call())
            except Exception:  # noqa: BLE001 - the EZKL verifier reverts on bad proofs
                on_chain = False
            console.print(f"on chain ({verifier.address}): {'VALID' if on_chain else 'INVALID'}")
            valid = valid and on_chain
        finally:
            connection.close()
    raise typer.Exit(0 if valid else 1)


def _verify_job(directory: Path, model: str | None, input_path: Path | None, config: Path | None) -> None:
    """A job is checked against the model and the input the auditor expects, never the job's own word."""
    from serve.scoring import verify_job

    if model is None or input_path is None:
        _fail(
            "verifying a scoring job needs --model (model id, package name or directory) and --input (the file "
            "that was scored)"
        )
    try:
        package = _package(model, _config(config)["state_dir"])
    except (LookupError, PackageError, ValueError) as error:
        _fail(str(error))
    report = verify_job(directory, package, input_path)
    console.print(report.describe())
    raise typer.Exit(0 if report.ok else 1)


def attestation_command(
    proof_hash: str = typer.Argument(..., help="0x + 64 hex: keccak256 of the proof bytes"),
    address: str | None = typer.Option(None, help="verifier host:port (default: from the config)"),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Show a proof's attestation: from the verifier service, else straight from the registry."""
    from serve.verifier.client import VerifierClient, status_name

    zk = _config(config)
    try:
        to_bytes32(proof_hash)
    except ValueError as error:
        _fail(f"proof hash: {error}")
    target = address or f"{zk['verifier']['host']}:{zk['verifier']['port']}"
    root_cert = zk["verifier"]["tls_cert_file"]  # token: $ZKSERVE_API_KEY
    with VerifierClient(target, timeout_s=5, retries=0, root_cert=root_cert) as client:
        try:
            record = client.get(proof_hash)
            console.print(f"{record.proof_hash}: {status_name(record)}")
            for name in ("model_id", "tx_hash", "block_number", "merkle_root", "leaf", "reason"):
                value = getattr(record, name)
                if value:
                    console.print(f"  {name}: {value}")
            if record.merkle_path:
                console.print(f"  merkle_path: {', '.join(record.merkle_path)}")
            return
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                console.print(f"the verifier at {target} has no record of it; checking the registry")
            elif error.code() != grpc.StatusCode.UNAVAILABLE:
                _fail(error.details())
    connection, registry = _chain(zk)
    try:
        record = registry.attestation(proof_hash)
    finally:
        connection.close()
    if record["block_number"]:
        console.print(f"{proof_hash}: attested on chain in block {record['block_number']} (model {record['model_id']})")
    else:
        _fail(f"{proof_hash} is not attested on chain (an anchored proof needs its leaf and path: ask the verifier)")


def usage_command(
    model: str | None = typer.Argument(
        None, help="model id, package name or directory (default: every registered model)"
    ),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Rows proven per model, as the registry on chain counts them: under anchored roots (the
    anchorer's statement) and under attested proofs (verified by the contract)."""
    from serve.chain.connect import connect

    zk = _config(config)
    model_ids: list[tuple[str, str]] = []
    if model is not None:
        if model.startswith("0x") and len(model) == 66:
            model_ids.append((model, model))
        else:
            try:
                package = _package(model, zk["state_dir"])
            except (LookupError, PackageError) as error:
                _fail(str(error))
            model_ids.append((package.name, package.model_id))
    try:
        connection = connect(zk, start_anvil=False, read_only=True)  # a read: never starts a chain or deploys
    except (ChainError, SigningKeyError) as error:
        _fail(str(error))
    try:
        chain_id = connection.client.chain_id()
        registry = Registry.recorded(connection.client, Path(zk["state_dir"]))
        if registry is None:
            _fail(f"no AttestationRegistry recorded for chain {chain_id} under {zk['state_dir']} "
                  "(or the chain no longer has it); register a model first (`zkserve register MODEL`)")
        if model is None:
            model_ids = registry.registered_models()
        rows = []
        for label, model_id in model_ids:
            info = registry.model(model_id)
            if not info["registered_at"]:
                _fail(f"model {label} ({model_id}) is not registered in {registry.address}")
            rows.append((label, model_id, info))
    except ChainError as error:
        _fail(str(error))
    finally:
        connection.close()
    console.print(f"registry {registry.address}  chain {chain_id}")
    if not rows:
        console.print("no model is registered")
    for label, model_id, info in rows:
        state = "  (deprecated)" if info["deprecated_at"] else ""
        console.print(f"{label}  {model_id}{state}")
        console.print(
            f"  anchored rows {info['anchored_rows']}  attested rows {info['attested_rows']}  "
            f"total {info['anchored_rows'] + info['attested_rows']}"
        )


def roles_command(
    action: str = typer.Argument("show", help="show | grant | revoke"),
    role: str | None = typer.Argument(None, help="registrar | anchorer"),
    account: str | None = typer.Argument(None, help="0x address"),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Who holds which role in the registry; the owner grants and revokes registrar and anchorer."""
    from eth_utils import is_address

    from serve.chain.registry import ROLES

    if action not in ("show", "grant", "revoke"):
        _fail(f"unknown action {action!r}; use show, grant or revoke")
    if action != "show":
        if role not in ("registrar", "anchorer"):
            _fail("give the role: registrar or anchorer (ownership moves with transferOwnership/acceptOwnership)")
        if not account or not is_address(account):
            _fail(f"give the account as a 0x address, not {account!r}")
    zk = _config(config)
    connection, registry = _chain(zk)
    try:
        if action == "grant":
            registry.grant_role(role, account)
        elif action == "revoke":
            registry.revoke_role(role, account)
        holders: dict[str, set[str]] = {name: set() for name in ROLES}
        names = {value: name for name, value in ROLES.items()}
        for event in registry.contract.events.RoleGranted.get_logs(from_block=0):
            holders[names.get(event["args"]["role"], "other")].add(event["args"]["account"])
        console.print(f"registry {registry.address}  chain {registry.chain.chain_id()}  owner {registry.owner()}")
        for name in ("registrar", "anchorer"):
            current = sorted(a for a in holders[name] if registry.has_role(name, a))
            console.print(f"  {name}: {', '.join(current) or 'nobody'}")
    except ChainError as error:
        _fail(str(error))
    finally:
        connection.close()


def register(app: typer.Typer) -> None:
    app.command("verifier")(verifier_command)
    app.command("register")(register_command)
    app.command("verify")(verify_command)
    app.command("attestation")(attestation_command)
    app.command("usage")(usage_command)
    app.command("roles")(roles_command)

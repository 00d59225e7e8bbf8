"""Verification as the appliance does it: against its trust directory, in one call.

The trust directory holds the bundle-signing keys (`*.pub`), the revocation list (`revoked`)
and, optionally, OpenSSF model-signing keys and CA certificates (`model-signing/*.pem`).
"""

from __future__ import annotations

from pathlib import Path

from installer.bundle.hashing import ProgressSink
from installer.bundle.modelsig import ModelTrust
from installer.bundle.report import VerifyReport
from installer.bundle.trust import TrustStore
from installer.bundle.verify import verify_bundle

MODEL_SIGNING_SUBDIR = "model-signing"


def model_trust_of(trust_dir: Path) -> ModelTrust:
    return ModelTrust.from_paths(sorted((Path(trust_dir) / MODEL_SIGNING_SUBDIR).glob("*.pem")))


def verify_with_trust_dir(
    bundle_dir: Path,
    trust_dir: Path,
    *,
    progress: ProgressSink | None = None,
    record_rotation: bool = False,
) -> VerifyReport:
    """Verify `bundle_dir` with everything `trust_dir` holds.

    With `record_rotation`, a valid bundle signed by a new key that a trusted key endorsed
    makes the new key trusted from now on (install and upgrade pass True; a plain verify not).
    """
    store = TrustStore(trust_dir)
    report = verify_bundle(
        bundle_dir,
        store.keys(),
        revoked=store.revoked_fingerprints(),
        progress=progress,
        model_trust=model_trust_of(trust_dir),
    )
    if record_rotation and report.ok and report.endorsed_by and report.signer is not None:
        store.add(report.signer)
    return report
